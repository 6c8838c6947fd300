"""Recipes (configs/filters/*.yaml, `curate run --config`): each baseline recipe equals its reference rule,
and/or/not combine as logic says, and every mistake points at the file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curate.cli import main as curate_main
from curate.recipe import RecipeError, load_recipe
from curate.subset import read_subset
from filters.base import FilterConfigError
from tests.curate.test_filter_library import (
    load_frame, pairs, py_gcld3_language, py_language, ref_clip_fraction, ref_image_based, ref_text_based, targets_file, write_library_pool,
)

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "configs" / "filters"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipepool")
    write_library_pool(root, [1300, 1100, 1200], seed=11)
    df, emb = load_frame(root)
    lang = np.array(py_language(df.text.tolist()), dtype=object)
    gcld3 = np.array(py_gcld3_language(df.text.tolist()), dtype=object)
    return {"root": root, "df": df, "emb": emb, "lang": lang, "gcld3": gcld3, "targets": targets_file(root / "t.npy")}


def curate_run(pool, out, *args) -> tuple[int, np.ndarray | None]:
    rc = curate_main(["run", "--pool", str(pool["root"]), "--output", str(out), "--processes", "1", "--no-report", *map(str, args)])
    return rc, read_subset(out / "subset.npy") if rc == 0 else None


def reference(name: str, pool) -> np.ndarray:
    df, lang = pool["df"], pool["lang"]
    en = lang == "en"
    b32 = df.clip_b32_similarity_score.to_numpy()  # float32, compared in float32 as DataComp's pandas does
    l14 = df.clip_l14_similarity_score.to_numpy()
    with np.errstate(invalid="ignore"):
        if name == "no_filter":
            return np.ones(len(df), bool)
        if name == "basic":
            words = np.array([len(t.split()) if t else 0 for t in df.text])
            chars = np.array([len(t) if t else 0 for t in df.text])
            w, h = df.original_width.to_numpy(dtype=float), df.original_height.to_numpy(dtype=float)
            mn, mx = np.minimum(w, h), np.maximum(w, h)
            return en & (words > 2) & (chars > 5) & (mn >= 200) & (mx / mn <= 3.0)
        if name == "clip_score_l14_30pct":
            return ref_clip_fraction(l14, 0.3)
        if name == "laion2b":
            return (pool["gcld3"] == "en") & (b32 >= 0.28)
        if name == "text_based":
            return ref_text_based(df, lang)
        if name == "image_based":
            return ref_image_based(df, pool["emb"], lang, np.load(pool["targets"]), 8, 40)
        if name == "image_based_clip_score":
            return reference("image_based", pool) & ref_clip_fraction(l14, 0.3)
        if name == "laion_a":
            a = df.aesthetic_score.to_numpy(dtype=float)
            return (a >= 4.5) & np.array([d is True for d in df.dedup_phash_keep])
    raise AssertionError(name)


BASELINES = ["no_filter", "basic", "clip_score_l14_30pct", "laion2b", "text_based", "image_based", "image_based_clip_score", "laion_a"]


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_recipe_equals_reference(pool, tmp_path, name):
    extra = []
    if name.startswith("image_based"):
        extra = ["--set", f"image_based.targets={pool['targets']}", "--set", "image_based.k=8", "--set", "image_based.points_per_centroid=40"]
    rc, got = curate_run(pool, tmp_path, "--config", RECIPES / f"{name}.yaml", *extra)
    assert rc == 0
    want = reference(name, pool)
    assert np.array_equal(got, pairs(pool["df"].uid[want]))
    assert len(got) > 0


def test_every_shipped_recipe_loads():
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    assert set(BASELINES) <= set(names)
    for p in RECIPES.glob("*.yaml"):
        ov = ["image_based.targets=x.npy"] if p.stem.startswith("image_based") else []
        r = load_recipe(p, ov)
        assert r.steps and r.description


def test_and_or_not(pool, tmp_path):
    recipe = tmp_path / "logic.yaml"
    recipe.write_text(
        "name: logic\n"
        "steps:\n"
        "  - or:\n"
        "      - aesthetic: {threshold: 6.0}\n"
        "      - clip_score: {arch: b32, threshold: 0.3}\n"
        "  - not:\n"
        "      image_size: {min_side: 300, max_aspect: null}\n"
        "  - and:\n"
        "      - text_based\n"
        "      - not: laion2b\n"
    )
    out = tmp_path / "o"
    rc = curate_main(["run", "--pool", str(pool["root"]), "--config", str(recipe), "--output", str(out), "--processes", "2", "--no-report"])
    assert rc == 0
    df, lang = pool["df"], pool["lang"]
    a = df.aesthetic_score.to_numpy(dtype=float)
    b32 = df.clip_b32_similarity_score.to_numpy()
    w, h = df.original_width.to_numpy(dtype=float), df.original_height.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        step1 = (a >= 6.0) | (b32 >= 0.3)
        size_ok = ~np.isnan(w) & ~np.isnan(h) & (np.minimum(w, h) >= 300)
        laion = (pool["gcld3"] == "en") & (b32 >= 0.28)
    want = step1 & ~size_ok & ref_text_based(df, lang) & ~laion
    got = read_subset(out / "subset.npy")
    assert np.array_equal(got, pairs(df.uid[want])) and len(got) > 0
    import json

    stats = json.loads((out / "stats.json").read_text())
    labels = [s["label"] for s in stats["steps"][1:]]
    assert labels == ["or(aesthetic[>= 6], clip_score[b32 >= 0.3])", "not(image_size)", "and(text_based, not(laion2b))"]
    or_step = stats["steps"][1]
    assert [p["rows_in"] for p in or_step["parts"]] == [len(df), len(df)] and or_step["kept"] == int(step1.sum())
    nested = stats["steps"][3]["parts"][1]
    assert nested["filter"] == "not(laion2b)" and nested["parts"][0]["filter"] == "laion2b"
    assert stats["recipe"]["name"] == "logic"


def test_filter_flags_still_intersect_and_add_to_a_recipe(pool, tmp_path):
    rc, got = curate_run(pool, tmp_path / "a", "--filter", "basic", "--filter", "clip_score", "--fraction", "0.3")
    assert rc == 0
    assert np.array_equal(got, pairs(pool["df"].uid[reference("basic", pool) & reference("clip_score_l14_30pct", pool)]))
    rc, got2 = curate_run(pool, tmp_path / "b", "--config", RECIPES / "basic.yaml", "--filter", "clip_score", "--fraction", "0.3")
    assert rc == 0 and np.array_equal(got, got2)


BAD = [
    ("steps:\n  - basic\n  - clip_scor: {fraction: 0.3}\n", r":3:5: unknown filter 'clip_scor' \(did you mean 'clip_score'\?\); known filters: .*basic"),
    ("steps:\n  - clip_score:\n      arch: l14\n      fracton: 0.3\n", r":4:7: filter 'clip_score' has no parameter 'fracton' \(did you mean 'fraction'\?\); its parameters: arch, fraction, threshold"),
    ("steps:\n  - clip_score:\n      fraction: 1.5\n", r":3:17: clip_score: --fraction must be in \(0, 1\]"),
    ("name: x\nstep:\n  - basic\n", r":2:1: unknown key 'step' \(did you mean 'steps'\?\)"),
    ("steps:\n  - or: basic\n", r":2:9: or: expects a non-empty list"),
    ("steps:\n  - basic\n    clip_score: {}\n", r"(:3:\d+|:2:\d+): "),
    ("steps:\n  - {basic: {}, laion2b: {}}\n", r":2:5: a step mapping has exactly one key"),
    ("steps: []\n", r":1:8: steps: expects a non-empty list"),
    ("steps:\n  - aesthetic: {threshold: high}\n", r":2:28: aesthetic: threshold must be a number"),
    ("steps:\n  - image_based: {k: auto}\n", r":2:5: image_based: image_based needs `targets`.*--set image_based.targets"),
]


@pytest.mark.parametrize("text, pattern", BAD, ids=[str(i) for i in range(len(BAD))])
def test_recipe_mistakes_point_at_file_and_line(tmp_path, text, pattern):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError, match=pattern) as e:
        load_recipe(p)
    assert str(e.value).startswith(str(p))


def test_recipe_errors_reach_the_command_line(pool, tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("steps:\n  - basic\n  - laion2c\n")
    assert curate_main(["run", "--pool", str(pool["root"]), "--config", str(p), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{p}:3:5: unknown filter 'laion2c'" in err and "laion2b" in err
    with pytest.raises(FilterConfigError, match="no such filter"):
        load_recipe(RECIPES / "basic.yaml", ["clip_score.fraction=0.2"])
    with pytest.raises(FilterConfigError, match="FILTER.PARAM=VALUE"):
        load_recipe(RECIPES / "basic.yaml", ["basic=3"])


def test_paths_in_a_recipe_are_relative_to_it(pool, tmp_path):
    d = tmp_path / "recipes"
    d.mkdir()
    targets_file(d / "feats.npy")
    (d / "r.yaml").write_text("steps:\n  - image_based: {targets: feats.npy, k: 4}\n")
    r = load_recipe(d / "r.yaml")
    assert r.steps[0].targets == str((d / "feats.npy").resolve())
