"""Each metadata filter against an independent, row-by-row implementation of DataComp's rule."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.engines import LocalEngine
from curate.pool import Pool, PoolError
from curate.run import run_filters
from curate.subset import read_subset
from filters.base import FilterConfigError
from filters.registry import build_filter
from tests.curate.helpers import write_metadata_pool


_LANG_CACHE: dict = {}


def _language(texts, detector="fasttext"):
    key = (detector, tuple(texts))
    if key not in _LANG_CACHE:
        _LANG_CACHE[key] = _language_uncached(texts, detector)
    return _LANG_CACHE[key]


def _language_uncached(texts, detector):
    """DataComp's get_fasttext_language / get_gcld3_language, one caption at a time."""
    if detector == "gcld3":
        import gcld3

        model = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
        return [None if t is None else model.FindLanguage(text=t.replace("\n", " ")).language for t in texts]
    import fasttext

    from curate.signals.language import packaged_fasttext_model

    model = fasttext.load_model(packaged_fasttext_model())
    return [None if t is None else model.predict(t.replace("\n", " "))[0][0].split("__label__")[1] for t in texts]


def reference_subset(df: pd.DataFrame, names, fraction=None, threshold=None, arch="l14") -> np.ndarray:
    """DataComp's baselines.py rules, written plainly with pandas and Python loops (scores in their float32)."""
    keep = np.ones(len(df), bool)
    for name in names:
        if name == "basic":
            lang = np.array(_language(df.text.tolist()), dtype=object)
            words = np.array([len(t.split()) if t is not None else 0 for t in df.text])
            chars = np.array([len(t) if t is not None else 0 for t in df.text])
            w = df.original_width.to_numpy(dtype=float)
            h = df.original_height.to_numpy(dtype=float)
            with np.errstate(invalid="ignore", divide="ignore"):
                mn, mx = np.minimum(w, h), np.maximum(w, h)
                ok = (lang == "en") & (words > 2) & (chars > 5) & (mn >= 200) & (mx / mn <= 3.0)
            keep &= np.asarray(ok, dtype=bool)
        elif name == "clip_score":
            key = f"clip_{arch}_similarity_score"
            t = threshold
            if threshold is None:
                n = int(len(df) * fraction)
                t = -np.sort(-df[key].values)[n]  # DataComp's get_threshold
            keep &= (df[key] >= t).to_numpy()
        elif name == "laion2b":
            lang = np.array(_language(df.text.tolist(), "gcld3"), dtype=object)
            keep &= (lang == "en") & (df.clip_b32_similarity_score >= 0.28).to_numpy()
        elif name != "no_filter":
            raise AssertionError(name)
    uids = df.uid[keep]
    return np.sort(np.array([divmod(int(u, 16), 2**64) for u in uids], dtype=np.dtype("u8,u8")))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    write_metadata_pool(root, [1500, 1200, 1, 2000], seed=7)
    return root


@pytest.fixture(scope="module")
def frame(pool):
    return pd.concat([pq.read_table(p).to_pandas() for p in sorted((pool / "metadata").glob("*.parquet"))], ignore_index=True)


CASES = [
    (["no_filter"], {}),
    (["basic"], {}),
    (["clip_score"], {"fraction": 0.3, "arch": "l14"}),
    (["clip_score"], {"fraction": 0.1, "arch": "b32"}),
    (["clip_score"], {"threshold": 0.25, "arch": "b32"}),
    (["laion2b"], {}),
    (["basic", "clip_score"], {"fraction": 0.3, "arch": "l14"}),
]


@pytest.mark.parametrize("names, opts", CASES, ids=["+".join(n) + str(sorted(o.items())) for n, o in CASES])
def test_subset_equals_reference(pool, frame, tmp_path, names, opts):
    filters = [build_filter(n, **opts) for n in names]
    with LocalEngine(2) as engine:
        stats = run_filters(Pool(pool), filters, tmp_path, engine)
    got = read_subset(tmp_path / "subset.npy")
    want = reference_subset(frame, names, **opts)
    assert np.array_equal(got, want)
    assert len(got) > 0 or names == ["laion2b"]
    # counts reconcile at every step: in = kept + rejected, and the first-rule reasons add up
    assert stats["rows_in"] == len(frame) == stats["kept"] + stats["rejected"]
    for step in stats["steps"]:
        assert step["rows_in"] == step["kept"] + step["rejected"]
        assert sum(step["rejected_by_first_rule"].values()) == step["rejected"]
    assert stats["steps"][-1]["kept"] == len(got)


def test_odd_captions_and_sizes_are_rejected_with_reasons(tmp_path):
    good = "a photo of a dog running on the beach"
    table = pa.table({
        "uid": [f"{i:032x}" for i in range(6)],
        "text": pa.array([good.encode(), None, b"\xff\xfe not utf8 at all here", good.encode(), good.encode(), "".encode()], pa.binary()),
        "original_width": pa.array([300, 300, 300, None, 300, 300], pa.int64()),
        "original_height": pa.array([300, 300, 300, 300, 2000, 300], pa.int64()),
    })
    (tmp_path / "pool").mkdir()
    pq.write_table(table, tmp_path / "pool" / "part.parquet")
    with LocalEngine(1) as engine:
        stats = run_filters(Pool(tmp_path / "pool"), [build_filter("basic")], tmp_path / "out", engine)
    step = stats["steps"][1]
    assert stats["kept"] == 1
    assert step["rejected_by_first_rule"] == {"missing_caption": 2, "missing_size": 1, "aspect_ratio": 1, "too_few_words": 1}


def test_missing_column_names_column_and_file(tmp_path):
    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"uid": ["0" * 32], "text": ["a b c d e f"]}), tmp_path / "pool" / "x.parquet")
    with LocalEngine(1) as engine, pytest.raises(Exception, match=r"clip_l14_similarity_score.*|x\.parquet"):
        run_filters(Pool(tmp_path / "pool"), [build_filter("clip_score", threshold=0.2)], tmp_path / "out", engine)


def test_malformed_parquet_is_a_clear_error(tmp_path):
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with LocalEngine(1) as engine, pytest.raises(PoolError, match="broken.parquet"):
        run_filters(Pool(tmp_path / "pool"), [build_filter("no_filter")], tmp_path / "out", engine)


def test_invalid_uids_are_rejected_and_counted(tmp_path):
    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"uid": ["0" * 32, "zz", None, "1" * 32]}), tmp_path / "pool" / "p.parquet")
    with LocalEngine(1) as engine:
        stats = run_filters(Pool(tmp_path / "pool"), [build_filter("no_filter")], tmp_path / "out", engine)
    assert stats["kept"] == 2 and stats["steps"][0]["rejected_by_first_rule"] == {"invalid_uid": 2}


def test_filter_options_are_checked():
    with pytest.raises(FilterConfigError, match="known filters: .*basic"):
        build_filter("basik")
    with pytest.raises(FilterConfigError, match="--fraction"):
        build_filter("clip_score")
    with pytest.raises(FilterConfigError, match=r"\(0, 1\]"):
        build_filter("clip_score", fraction=1.5)


def test_fasttext_model_path_is_checked(tmp_path):
    from curate.signals.language import LanguageDetector, LanguageModelError

    with pytest.raises(LanguageModelError, match="lid.176.bin"):
        LanguageDetector(str(tmp_path / "lid.176.bin"))
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(LanguageModelError, match="junk.bin: not a fastText model"):
        LanguageDetector(str(tmp_path / "junk.bin"))


def test_large_pool_clip_score_equals_reference(tmp_path):
    """A few hundred thousand rows, several partitions: the same subset as DataComp's get_threshold rule."""
    write_metadata_pool(tmp_path / "pool", [120_000, 90_000, 90_000], seed=21)
    frame = pd.concat([pq.read_table(p, columns=["uid", "clip_l14_similarity_score"]).to_pandas()
                       for p in sorted((tmp_path / "pool" / "metadata").glob("*.parquet"))], ignore_index=True)
    with LocalEngine(2) as engine:
        stats = run_filters(Pool(tmp_path / "pool"), [build_filter("clip_score", fraction=0.3)], tmp_path / "out", engine)
    got = read_subset(tmp_path / "out" / "subset.npy")
    assert np.array_equal(got, reference_subset(frame, ["clip_score"], fraction=0.3))
    assert stats["rows_in"] == 300_000 and len(got) >= 90_000


def test_language_cache_is_reused_and_a_broken_one_recomputed(tmp_path):
    write_metadata_pool(tmp_path / "pool", [300], seed=5)
    cache = tmp_path / "pool" / "columns" / "language" / "metadata-00000000.parquet"

    def run(i):
        with LocalEngine(1) as engine:
            run_filters(Pool(tmp_path / "pool"), [build_filter("basic")], tmp_path / f"out{i}", engine)
        return (tmp_path / f"out{i}" / "subset.npy").read_bytes(), cache.stat().st_mtime_ns

    first, written = run(0)
    second, reused = run(1)
    assert reused == written  # the second run read the cache, it did not rewrite it
    cache.write_bytes(b"half a parquet file")
    third, rewritten = run(2)
    assert first == second == third
    assert pq.read_table(cache).num_rows == 300  # the damaged cache was recomputed whole
