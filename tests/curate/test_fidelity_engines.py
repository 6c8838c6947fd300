"""DataComp's baselines on the hard-case pool: DataComp's rule row by row, and the same bytes on every engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from curate.demo.hard_cases import hard_case_metadata
from curate.engines import LocalEngine, make_engine
from curate.pool import Pool
from curate.run import run_filters
from curate.subset import read_subset
from filters.compose import AnyOf
from filters.registry import build_filter
from tests.curate.helpers import java_available
from tests.curate.test_filter_library import imagenet21k_offsets, py_gcld3_language, py_language, ref_text_based

PARTS = [700, 1, 900, 400]


def filters():
    return [AnyOf([build_filter("basic"), build_filter("laion2b"), build_filter("text_based"),
                   build_filter("clip_score", arch="b32", threshold=0.26), build_filter("clip_score", arch="l14", fraction=0.3)])]


@pytest.fixture(scope="module")
def hard_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard")
    (root / "metadata").mkdir()
    for i, n in enumerate(PARTS):
        pq.write_table(hard_case_metadata(n, seed=100 + i), root / "metadata" / f"{i:08d}.parquet")
    df = pd.concat([pq.read_table(p).to_pandas() for p in sorted((root / "metadata").glob("*.parquet"))], ignore_index=True)
    with LocalEngine(2) as engine:
        stats = run_filters(Pool(root), filters(), root / "local", engine)
    return root, df, stats


def datacomp_masks(df) -> dict[str, np.ndarray]:
    """Each baseline as DataComp's apply_filter.py computes it, on the whole frame."""
    lang = np.array(py_language(df.text.tolist()), dtype=object)
    words = df.text.apply(lambda x: len(x.split()))
    chars = df.text.apply(len)
    mn = np.minimum(df.original_width, df.original_height)
    mx = np.maximum(df.original_width, df.original_height)
    basic = (lang == "en") & ((words > 2) & (chars > 5)).to_numpy() & ((mn >= 200) & (mx / mn <= 3.0)).to_numpy()
    key = "clip_l14_similarity_score"
    threshold = -np.sort(-df[key].values)[int(len(df) * 0.3)]
    gcld3 = np.array(py_gcld3_language(df.text.tolist()), dtype=object)
    return {
        "basic": basic,
        "laion2b": (gcld3 == "en") & (df.clip_b32_similarity_score >= 0.28).to_numpy(),
        "text_based": ref_text_based(df, lang, imagenet21k_offsets()),
        "clip_b32": (df.clip_b32_similarity_score >= 0.26).to_numpy(),
        "clip_l14": (df[key] >= threshold).to_numpy(),
    }


def test_hard_pool_equals_datacomp_rules(hard_pool):
    root, df, stats = hard_pool
    masks = datacomp_masks(df)
    parts = stats["steps"][1]["parts"]
    for part, (name, mask) in zip(parts, masks.items()):
        assert part["kept"] == int(mask.sum()), name
        assert 0 < part["kept"] < len(df), name
    keep = np.logical_or.reduce(list(masks.values()))
    want = np.sort(np.array([divmod(int(u, 16), 2**64) for u in df.uid[keep]], dtype="u8,u8"))
    assert np.array_equal(read_subset(root / "local" / "subset.npy"), want)


def _same(stats, other):
    skip = ("engine", "seconds", "subset_file", "report")
    return {k: v for k, v in stats.items() if k not in skip} == {k: v for k, v in other.items() if k not in skip}


def test_dask_gives_the_same_bytes(hard_pool, tmp_path):
    root, _, stats = hard_pool
    with make_engine("dask", processes=2) as engine:
        got = run_filters(Pool(root), filters(), tmp_path, engine, report=False)
    assert (tmp_path / "subset.npy").read_bytes() == (root / "local" / "subset.npy").read_bytes()
    assert _same(got, stats)


@pytest.mark.skipif(not java_available(), reason="Spark needs Java 17+")
def test_spark_gives_the_same_bytes(hard_pool, tmp_path):
    root, _, stats = hard_pool
    with make_engine("spark", processes=2) as engine:
        got = run_filters(Pool(root), filters(), tmp_path, engine, report=False)
    assert (tmp_path / "subset.npy").read_bytes() == (root / "local" / "subset.npy").read_bytes()
    assert _same(got, stats)
