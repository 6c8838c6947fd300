"""`curate dedup --method phash` through the CLI on Dask and Spark: the exact-block group search gives the same
bytes as the local engine, with every search path taken (small groups, hamming, an oversize group in
sub-blocks) over several shuffle partitions, on a pool with skew and pairs at exactly D-1, D and D+1; and with
every group split at the shuffle (the two-level key of `xlarge`-sized pools)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from curate.cli import main as curate_main
from curate.dedup import block_search as bs
from curate.dedup import dask_job, spark_job
from tests.curate.dedup.synth import write_phash_pool
from tests.curate.helpers import java_available

D = 5


def _hashes(seed: int = 7) -> list[str | None]:
    rng = np.random.default_rng(seed)
    values = list(rng.integers(0, 2**64, 600, dtype=np.uint64))
    for _ in range(40):  # copies at exactly D-1, D, D+1 bits from a root
        root = rng.integers(0, 2**64, dtype=np.uint64)
        values.append(root)
        for k in (D - 1, D, D + 1):
            values.append(root ^ np.bitwise_or.reduce(np.uint64(1) << rng.choice(64, k, replace=False).astype(np.uint64)))
    skew = (np.uint64(0x0123456789AB) << np.uint64(16)) | rng.integers(0, 2**16, 150, dtype=np.uint64)  # one big group
    values += list(skew) + list(skew[:50] ^ np.uint64(0b1001))
    hexes: list[str | None] = [f"{int(v):016x}" for v in values]
    hexes += hexes[:5]  # exact repeats
    hexes[3], hexes[9] = None, "zz"  # missing and malformed
    return hexes


@pytest.fixture(scope="module")
def local_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("bs") / "pool"
    write_phash_pool(root, _hashes(), files=4)
    assert curate_main(["dedup", "--pool", str(root), "--method", "phash", "--max-distance", str(D), "--no-progress"]) == 0
    return root


def _outputs(root):
    out = {p.name: p.read_bytes() for p in sorted((root / "columns" / "dedup_phash").glob("*.parquet"))}
    stats = json.loads((root / "columns" / "dedup_phash_stats.json").read_text())
    return out, stats


def _run_engine(local_pool, tmp_path, monkeypatch, engine: str, split: bool = False):
    if split:  # as at `xlarge`: every block group split at the shuffle in exact sub-blocks (the driver decides)
        monkeypatch.setattr(bs, "SHUFFLE_GROUP_ROWS", 0)
        # and, as there, many shuffle partitions for the labels
        monkeypatch.setattr(dask_job, "ROWS_PER_PARTITION", 10)
    monkeypatch.setattr(bs, "SMALL_GROUP", 4)  # the driver passes these to the workers
    monkeypatch.setattr(bs, "MAX_GROUP", 100)
    monkeypatch.setattr(dask_job, "GROUP_ROWS_PER_PARTITION", 1000)
    monkeypatch.setattr(spark_job, "GROUP_ROWS_PER_PARTITION", 1000)
    root = tmp_path / "pool"
    shutil.copytree(local_pool, root, ignore=shutil.ignore_patterns("dedup_phash*"))
    rc = curate_main(["dedup", "--pool", str(root), "--method", "phash", "--max-distance", str(D), "--engine", engine,
                      "--processes", "2", "--no-progress"])
    assert rc == 0
    want, local = _outputs(local_pool)
    got, stats = _outputs(root)
    assert len(want) == 4 and got == want  # every output file, byte for byte
    assert stats["pairs_of_distinct_hashes"] == local["pairs_of_distinct_hashes"] > 40
    for k in ("rows", "groups", "groups_with_duplicates", "largest_group", "kept", "malformed", "without_value"):
        assert stats[k] == local[k], k
    # every path ran: all-pairs groups, hamming groups, the skewed group (~200 hashes) split into sub-blocks
    # Dask sends the labels in the key shuffle to their hashes' partitions; Spark joins them by hash to the keyed rows
    assert stats["label_join"] == ("in the key shuffle" if engine == "dask" else "by hash, only the labels move")
    search = stats["block_search"]
    if split:
        assert search["block_group_rows"] == (D + 1) ** 2 * stats["distinct_hashes"] and search["group_partitions"] > 2
        assert stats["plan"] == "D=5: 6 exact blocks of 11/10 bits, each group split in 6 exact sub-blocks"
        return
    assert search["largest_block_group"] >= 200 and search["oversize_block_groups"] >= 1
    assert search["block_group_rows"] == (D + 1) * stats["distinct_hashes"] and search["group_partitions"] > 2
    assert stats["plan"] == "D=5: 6 exact blocks of 11/10 bits"


@pytest.mark.parametrize("split", [False, True], ids=["block-groups", "split-groups"])
def test_dask_cli_same_bytes_as_local(local_pool, tmp_path, monkeypatch, split):
    _run_engine(local_pool, tmp_path, monkeypatch, "dask", split)


@pytest.mark.skipif(not java_available(), reason="Spark needs Java 17+")
@pytest.mark.parametrize("split", [False, True], ids=["block-groups", "split-groups"])
def test_spark_cli_same_bytes_as_local(local_pool, tmp_path, monkeypatch, split):
    _run_engine(local_pool, tmp_path, monkeypatch, "spark", split)


def test_spark_labels_join_the_keyed_rows_where_they_are(tmp_path):
    """The labels (h, label) join the keyed rows on h, by which the keyed rows' window already partitioned and
    sorted them: in the executed plan the keyed side goes straight into the join (no exchange, no sort; joined
    on node it took a shuffle of the pool), and each row gets its hash's label, else its node."""
    if not java_available():
        pytest.skip("Spark needs Java 17+")
    import pandas as pd

    from curate.engines import make_engine

    with make_engine("spark", processes=2) as engine:
        spark = engine.spark
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")  # as for labels too many to broadcast
        h = np.array([5, 9, 5, 7, 9, 11, 13], np.int64)
        keys = spark.createDataFrame(pd.DataFrame({"row": np.arange(len(h)), "file": np.zeros(len(h), np.int32), "h": h}),
                                     "row long, file int, h long")
        keyed = spark_job._keyed(keys.repartition(3), "h")
        labels = spark.createDataFrame(pd.DataFrame({"h": [9, 7, 13], "label": [0, 0, 6]}), "h long, label long")
        rows = spark_job._grouped(keyed, labels.localCheckpoint())
        got = rows.select("row", "node", "group", "multi").toPandas().sort_values("row")
        plan = rows._jdf.queryExecution().executedPlan().toString().splitlines()
        keyed.unpersist()
    assert got.node.tolist() == [0, 1, 0, 3, 1, 5, 6]
    assert got.group.tolist() == [0, 0, 0, 0, 0, 5, 6]  # 9 and 7 -> 0; 5 is node 0 itself; 11 has no label
    assert got.multi.tolist() == [True, True, True, True, True, False, True]
    join = next(i for i, line in enumerate(plan) if "Join [h#" in line)
    assert "SortMergeJoin" in plan[join]
    keyed_side = plan[join + 1]
    assert "TableCacheQueryStage" in keyed_side or "InMemoryTableScan" in keyed_side, "\n".join(plan)
    assert not any("hashpartitioning(node" in line for line in plan)
