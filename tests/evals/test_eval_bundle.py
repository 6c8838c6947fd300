"""`evaluate bundle`: a filtering-track submission gathered from a run, checked, written whole."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from curate.subset import write_subset
from curate.uids import UID_DTYPE
from evals.cli import main
from evals.tasks import load_tasks


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_run(tmp_path, n_rows=50, keys=("imagenet1k", "cifar10", "retrieval/flickr30k"), evals_subdir=False):
    """A curate output (subset.npy + stats.json) and a train/evaluate run folder (info.json + eval results)."""
    rng = np.random.default_rng(0)
    pairs = np.zeros(n_rows, dtype=UID_DTYPE)
    pairs["f0"], pairs["f1"] = rng.integers(0, 2**63, n_rows), rng.integers(0, 2**63, n_rows)
    pairs[1] = pairs[0]  # one uid listed twice (upsampled)
    cur = tmp_path / "curated"
    subset = write_subset(cur / "subset.npy", pairs)
    (cur / "stats.json").write_text(json.dumps({
        "kept": n_rows, "rows_in": 400, "subset_sha256": _sha(subset), "pool": "/pools/small",
        "filters": [{"name": "clip_score", "fraction": 0.3}], "thresholds": {"clip_score": 0.28}}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "info.json").write_text(json.dumps({
        "scale": "small", "protocol": {"samples_seen": 12_800_000, "model": "ViT-B-32"}, "finished": True,
        "samples_seen": 12_800_000, "non_standard": {}}))
    res = run / "evals" if evals_subdir else run
    res.mkdir(exist_ok=True)
    with open(res / "eval_results.jsonl", "w") as f:
        for i, k in enumerate(keys):
            f.write(json.dumps({"key": k, "dataset": k, "main_metric": 0.1 + 0.01 * i, "metrics": {}}) + "\n")
    return run, subset


def test_bundle_written_with_manifest(tmp_path, capsys):
    run, subset = _make_run(tmp_path)
    out = tmp_path / "bundle"
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out)]) == 0
    m = json.loads((out / "bundle.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "eval_results.jsonl", "info.json", "stats.json",
                                                      "subset.npy"]
    for name, entry in m["files"].items():
        assert entry["sha256"] == _sha(out / name) and entry["bytes"] == (out / name).stat().st_size
    assert m["subset"]["sha256"] == _sha(subset) and m["subset"]["rows"] == 50 and m["subset"]["unique_uids"] == 49
    assert m["training"] == {"scale": "small", "samples_seen": 12_800_000, "model": "ViT-B-32", "non_standard": {},
                             "standard_protocol": True}
    assert m["filter"]["filters"] == [{"name": "clip_score", "fraction": 0.3}]
    ev = m["evaluation"]
    assert ev["partial"] is True and ev["n_tasks"] == 3 and len(ev["missing"]) == 35
    assert ev["average"] == pytest.approx((0.10 + 0.11 + 0.12) / 3)
    assert m["complete"] is False and all(c["ok"] for c in m["checks"])
    assert "PARTIAL: 35 tasks missing" in capsys.readouterr().out
    # run again onto the same folder: an earlier bundle is replaced
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_complete_bundle_from_run_folder(tmp_path):
    keys = [t.key for t in load_tasks() if t.scored]
    run, subset = _make_run(tmp_path, keys=keys, evals_subdir=True)
    # subset.npy and stats.json inside the run folder: found without --subset
    for name in ("subset.npy", "stats.json"):
        (run / name).write_bytes((subset.parent / name).read_bytes())
    out = tmp_path / "b"
    assert main(["bundle", str(run), "--output", str(out)]) == 0
    m = json.loads((out / "bundle.json").read_text())
    assert m["complete"] is True and m["evaluation"]["n_tasks"] == 38 and m["evaluation"]["missing"] == []
    assert m["files"]["stats.json"]["source"] == str((run / "stats.json").resolve())


def test_inconsistent_run_is_refused(tmp_path, capsys):
    run, subset = _make_run(tmp_path)
    stats = json.loads((subset.parent / "stats.json").read_text())
    (subset.parent / "stats.json").write_text(json.dumps({**stats, "kept": 51}))
    info = json.loads((run / "info.json").read_text())
    (run / "info.json").write_text(json.dumps({**info, "finished": False, "samples_seen": 1000}))
    out = tmp_path / "bundle"
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "kept 51" in err and "stats.json" in err and "finished=False" in err and "samples_seen=1000" in err
    assert not out.exists()
    # a subset file that is not the one the recipe hashed
    (subset.parent / "stats.json").write_text(json.dumps({**stats, "subset_sha256": "0" * 64}))
    (run / "info.json").write_text(json.dumps(info))
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out)]) == 2
    assert "subset sha256" in capsys.readouterr().err and not out.exists()


def test_missing_files_are_named(tmp_path, capsys):
    run, subset = _make_run(tmp_path)
    out = str(tmp_path / "bundle")
    assert main(["bundle", str(run), "--output", out]) == 2  # no RUN/subset.npy
    assert f"{run / 'subset.npy'}" in capsys.readouterr().err
    (subset.parent / "stats.json").unlink()
    assert main(["bundle", str(run), "--subset", str(subset), "--output", out]) == 2
    assert f"{subset.parent / 'stats.json'}" in capsys.readouterr().err
    run2, subset2 = _make_run(tmp_path / "two")
    (run2 / "eval_results.jsonl").unlink()
    assert main(["bundle", str(run2), "--subset", str(subset2), "--output", out]) == 2
    err = capsys.readouterr().err
    assert str(run2 / "eval_results.jsonl") in err and str(run2 / "evals" / "eval_results.jsonl") in err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.arange(5))
    (run2 / "evals").mkdir()
    (run2 / "evals" / "eval_results.jsonl").write_text(json.dumps({"key": "cifar10", "main_metric": 0.5}) + "\n")
    assert main(["bundle", str(run2), "--subset", str(bad), "--stats", str(subset2.parent / "stats.json"),
                 "--output", out]) == 2
    assert "bad.npy" in capsys.readouterr().err and not (tmp_path / "bundle").exists()
    # never overwrite a folder that is not an earlier bundle
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    run3, subset3 = _make_run(tmp_path / "three")
    assert main(["bundle", str(run3), "--subset", str(subset3), "--output", str(tmp_path / "keep")]) == 2
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"
