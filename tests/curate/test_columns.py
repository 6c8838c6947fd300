"""Filters read columns the metadata lacks from the column store, joined by uid."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.columns import MissingColumnError, join_store_columns
from curate.engines import LocalEngine
from curate.pool import Pool
from curate.run import run_filters
from curate.subset import read_subset
from curate.uids import uids_to_pairs
from filters.registry import build_filter
from tests.curate.helpers import write_shard_pool


def test_clip_score_from_the_column_store(tmp_path):
    root = tmp_path / "pool"
    meta = write_shard_pool(root, [20, 15, 25], seed=8, failed_per_shard=1)
    (root / "metadata" / "00000000.parquet").unlink()  # shards only: the downloader's parquet has no scores
    (root / "metadata").rmdir()
    rng = np.random.default_rng(0)
    for shard in sorted((root / "shards").glob("*.parquet")):
        uids = pq.read_table(shard, columns=["uid", "status"]).to_pydict()
        ok = [u for u, s in zip(uids["uid"], uids["status"]) if s == "success"]
        scores = rng.normal(0.3, 0.05, len(ok)).astype(np.float32)
        (root / "columns" / "clip").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"uid": ok, "clip_b32_similarity_score": scores}), root / "columns" / "clip" / shard.name)
    stored = pq.read_table(root / "columns" / "clip").to_pydict()
    with LocalEngine(1) as engine:
        stats = run_filters(Pool(root), [build_filter("clip_score", arch="b32", fraction=0.25)], tmp_path / "out", engine)
    # reference: failed downloads have no score (NaN) and still count in N, as DataComp's rule does
    n = 63
    scores = np.array(stored["clip_b32_similarity_score"] + [np.nan] * 3, dtype=float)
    threshold = -np.sort(-scores)[int(n * 0.25)]
    want = np.sort(uids_to_pairs([u for u, s in zip(stored["uid"], stored["clip_b32_similarity_score"]) if s >= threshold]))
    assert stats["rows_in"] == n
    assert np.array_equal(read_subset(tmp_path / "out" / "subset.npy"), want)


def test_missing_store_column_says_how_to_make_it(tmp_path):
    with pytest.raises(MissingColumnError, match="'phash'.*curate stage --signals phash"):
        join_store_columns(tmp_path, pa.array(["0" * 32]), ["phash"], "somewhere.parquet")


def test_join_aligns_by_uid_with_nulls_for_absent(tmp_path):
    d = tmp_path / "columns" / "sig"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"uid": ["b" * 32, "a" * 32], "v": [2, 1]}), d / "00000000.parquet")
    pq.write_table(pa.table({"uid": ["c" * 32], "v": [3]}), d / "00000001.parquet")
    out = join_store_columns(tmp_path, pa.array(["c" * 32, "z" * 32, "a" * 32, "b" * 32]), ["v"], "p")
    assert out.column("v").to_pylist() == [3, None, 1, 2]


def test_datacomp_npz_embeddings_beside_the_metadata(tmp_path):
    from curate.columns import embeddings_to_numpy, read_columns

    (tmp_path / "pool" / "metadata").mkdir(parents=True)
    part = tmp_path / "pool" / "metadata" / "00000000.parquet"
    pq.write_table(pa.table({"uid": [f"{i:032x}" for i in range(5)]}), part)
    emb = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float16)
    np.savez(part.with_suffix(".npz"), l14_img=emb, b32_img=emb[:, :4])
    t = read_columns(tmp_path / "pool", str(part), ["uid", "l14_img", "b32_img"])
    assert np.array_equal(embeddings_to_numpy(t.column("l14_img")), emb)
    assert embeddings_to_numpy(t.column("b32_img")).shape == (5, 4)
    np.savez(part.with_suffix(".npz"), l14_img=emb[:3])
    with pytest.raises(MissingColumnError, match="3 rows"):
        read_columns(tmp_path / "pool", str(part), ["uid", "l14_img"])


def test_embeddings_keep_their_rows_when_some_are_null():
    from curate.columns import embeddings_to_arrow, embeddings_to_numpy

    emb = np.arange(12, dtype=np.float16).reshape(4, 3)
    col = embeddings_to_arrow(emb)
    taken = pa.compute.take(col, pa.array([2, None, 0, 3]))  # a uid join leaves a null row
    out = embeddings_to_numpy(pa.chunked_array([taken]))
    assert out.shape == (4, 3)
    assert np.array_equal(out[[0, 2, 3]], emb[[2, 0, 3]].astype(np.float32)) and np.isnan(out[1]).all()
    assert np.array_equal(embeddings_to_numpy(col.slice(1, 2)), emb[1:3])
