"""The Dask/Spark hash jobs hold nothing the size of the pool: what they persist follows the pairs found
(Dask: in worker memory) or lies on the executors' disks (Spark), while the outputs stay identical to the
local engine's. Plus the pieces that replaced the pool-wide frames: per-file summaries, keyed rows, and
writers that read the uids back from the input files."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import WorkerPlugin

from curate.dedup import frames as fr
from curate.dedup.run import run_dedup
from tests.curate.dedup.synth import planted_hashes, write_phash_pool
from tests.curate.helpers import java_available

N_RANDOM, CLUSTERS = 1500, 40


def _pool(tmp_path):
    values, _ = planted_hashes(N_RANDOM, CLUSTERS, 6, seed=11)
    hexes = [f"{int(v):016x}" for v in values]
    hexes[3], hexes[9] = "zz", None
    hexes += hexes[100:140]  # 40 exact repeats
    root = tmp_path / "pool"
    write_phash_pool(root, hexes, files=6, seed=11)
    return root


def _outputs(root):
    d = root / "columns" / "dedup_phash"
    stats = json.loads((root / "columns" / "dedup_phash_stats.json").read_text())
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.parquet"))}, stats


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("dedup_phash*"))
    return dst


def test_dask_holds_only_what_the_pairs_make_and_on_disk(tmp_path, monkeypatch):
    """Nothing is persisted in the workers' memory; what the job holds between steps (edges, star rounds, labels)
    goes to parquet beside the pool (dask_job.OnDisk), is bounded by the pairs, not the pool's rows, and is
    removed when the job ends."""
    from curate.dedup import dask_job
    from curate.engines import make_engine

    local = _pool(tmp_path)
    run_dedup(local, "phash", max_distance=6)
    want, local_stats = _outputs(local)
    rows = local_stats["rows"]
    pairs = local_stats["pairs_of_distinct_hashes"]
    assert pairs > 50 and rows > 10 * pairs

    persisted, held = [], {}
    real_persist, real_hold = dask_job._persist, dask_job.OnDisk.__call__

    def recording_persist(client, df):
        out = real_persist(client, df)
        persisted.append(len(out))
        return out

    def recording_hold(self, df, name):
        out = real_hold(self, df, name)
        files = sorted((self.folder / name).glob("*.parquet"))
        assert len(files) == df.npartitions  # one file a partition
        held[name] = len(out)  # read back from those files
        return out

    monkeypatch.setattr(dask_job, "_persist", recording_persist)
    monkeypatch.setattr(dask_job.OnDisk, "__call__", recording_hold)
    monkeypatch.setattr(dask_job, "ROWS_PER_PARTITION", 400)  # real shuffles
    root = _copy(local, tmp_path / "dask")
    stale = root / ".dedup_phash.scratch" / "stars-3" / "000000.parquet"  # as a killed run leaves it
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    with make_engine("dask", processes=2) as engine:
        stats = run_dedup(root, "phash", engine=engine, max_distance=6)
    got, _ = _outputs(root)
    assert got == want and stats["kept"] == local_stats["kept"]
    assert persisted == []  # nothing held in the workers' memory
    assert {"edges", "stars-0", "stars-1", "labels"} <= set(held)
    # the pairs, and the search's summary rows (5 a partition of block groups)
    assert held["edges"] == pairs + 5 * stats["block_search"]["group_partitions"]
    # edges, star rounds, labels: all bounded by a few times the pairs, none by the pool's rows
    assert max(held.values()) <= 4 * pairs < rows
    assert not (root / ".dedup_phash.scratch").exists()


class HeldRows(WorkerPlugin):
    """Dask worker plugin: the most partitions of the pool's rows (frames with `row` and `file` columns: keys,
    grouped rows and the rows riding with them) this worker held in memory at once."""

    name = "held-pool-rows"

    def setup(self, worker):
        self.worker, self.held, self.peak = worker, set(), 0

    def transition(self, key, start, finish, **kwargs):
        if finish == "memory" and key in self.worker.data:
            value = self.worker.data[key]
            if isinstance(value, pd.DataFrame) and {"row", "file"} <= set(value.columns) and len(value):
                self.held.add(key)
                self.peak = max(self.peak, len(self.held))
        elif start == "memory":
            self.held.discard(key)


@pytest.mark.parametrize("keep", ["first", "highest_clip_score"])
def test_dask_never_holds_all_row_partitions(tmp_path, monkeypatch, keep):
    """The pool's rows reach the writers a partition at a time: every task from the key shuffle to the file
    shuffle needs nothing but its own partition, and the writers are the rows' one consumer. At 100M hashes a
    second consumer (the largest group's count) made Dask finish every partition before either consumer took
    it, the whole pool in the workers' memory; joins of the rows with the labels or the keepers (tasks that
    wait on another frame's partitions) held many partitions too."""
    from curate.dedup import dask_job
    from curate.engines import make_engine

    values, _ = planted_hashes(N_RANDOM, CLUSTERS, 6, seed=11)
    local = tmp_path / "pool"
    write_phash_pool(local, [f"{int(v):016x}" for v in values], files=80, seed=11)
    run_dedup(local, "phash", max_distance=6, keep=keep)
    want, local_stats = _outputs(local)
    monkeypatch.setattr(dask_job, "ROWS_PER_PARTITION", 20)  # 80 partitions of rows
    root = _copy(local, tmp_path / "dask")
    with make_engine("dask", processes=2) as engine:
        engine.client.register_plugin(HeldRows(), name=HeldRows.name)
        stats = run_dedup(root, "phash", engine=engine, max_distance=6, keep=keep)
        peaks = engine.client.run(lambda dask_worker: dask_worker.plugins[HeldRows.name].peak)
    got, _ = _outputs(root)
    assert got == want and stats["partitions"] == 80 and stats["label_join"] == "in the key shuffle"
    assert stats["largest_group"] == local_stats["largest_group"] > 2
    # a few partitions a worker at a time: measured 4-8 of 80; with the joins 9-13 (first) and 39
    # (highest_clip_score); with the second consumer 41-74 partitions of grouped rows alone
    assert 0 < max(peaks.values()) <= 16, peaks


@pytest.mark.skipif(not java_available(), reason="Spark needs Java 17+")
def test_spark_keeps_the_keyed_rows_on_disk_not_in_the_heap(tmp_path, monkeypatch):
    from pyspark import StorageLevel
    from pyspark.sql.classic.dataframe import DataFrame  # the class a local session's frames have

    from curate.engines import make_engine

    local = _pool(tmp_path)
    run_dedup(local, "phash", max_distance=6)
    want, local_stats = _outputs(local)
    levels, cached = [], []
    real_persist, real_cache = DataFrame.persist, DataFrame.cache

    def persist(self, level=StorageLevel.MEMORY_AND_DISK_DESER):
        levels.append(level)
        return real_persist(self, level)

    def cache(self):
        cached.append(self)
        return real_cache(self)

    monkeypatch.setattr(DataFrame, "persist", persist)
    monkeypatch.setattr(DataFrame, "cache", cache)
    root = _copy(local, tmp_path / "spark")
    with make_engine("spark", processes=2) as engine:
        run_dedup(root, "phash", engine=engine, max_distance=6)
        left = engine.spark.sparkContext._jsc.getPersistentRDDs().values()
        # the keyed rows are released when the job ends (the small local checkpoints of the pairs stay)
        assert all(r.getStorageLevel().useMemory() for r in left)
    got, stats = _outputs(root)
    assert got == want and stats["groups"] == local_stats["groups"]
    assert levels == [StorageLevel.DISK_ONLY] and not cached


def test_file_summary_counts_and_first_malformed_rows(tmp_path):
    root = tmp_path / "pool"
    hexes = ["0123456789abcdef", "nothex", None, "ABCDEF0123456789", "12", None, "0123456789abcdef"]
    write_phash_pool(root, hexes, files=1, status=["success", "success", "failed_to_download", "success", "success", None, "success"])
    (path,) = sorted((root / "columns" / "phash").glob("*.parquet"))
    f = fr.ColumnFile(0, str(path), 100, len(hexes))
    s = fr.file_summary(f, "phash")
    assert s.iloc[0][["rows", "present", "valid"]].tolist() == [7, 5, 3]
    stats: dict = {}
    valid = fr.apply_summary(pd.concat([s, s.assign(file=1)]), "phash", stats)
    assert valid == {0: 3, 1: 3}
    assert stats["rows"] == 14 and stats["malformed"] == 4 and stats["without_value"] == 4
    assert stats["without_value_by_status"] == {"failed_to_download": 2, "null": 2}
    uids = pq.read_table(path).column("uid").to_pylist()
    assert [e["phash"] for e in stats["malformed_examples"]] == ["nothex", "nothex", "12", "12"]
    assert stats["malformed_examples"][0]["uid"] == uids[1]


def test_read_keys_and_nodes(tmp_path):
    root = tmp_path / "pool"
    hexes = ["00000000000000ff", "bad", "00000000000000ff", None, "ffffffffffffffff"]
    write_phash_pool(root, hexes, files=1)
    (path,) = sorted((root / "columns" / "phash").glob("*.parquet"))
    keys = fr.read_keys(fr.ColumnFile(2, str(path), 10, 5), "phash", uid=True)
    assert keys["row"].tolist() == [10, 12, 14] and set(keys["file"]) == {2}
    assert keys["h"].tolist() == [255, 255, -1]
    assert keys["uid"].tolist() == [pq.read_table(path).column("uid")[i].as_py() for i in (0, 2, 4)]
    nodes = fr.assign_nodes(keys.iloc[::-1], "h").sort_values("row")
    assert nodes["node"].tolist() == [10, 10, 14] and nodes["cnt"].tolist() == [2, 2, 1]


def test_writer_reads_uids_back_and_refuses_a_changed_file(tmp_path):
    src = tmp_path / "00000007.parquet"
    pq.write_table(pa.table({"uid": pa.array(["a", "b", "c"], pa.large_string()), "phash": ["1", "2", "3"]}), src)
    f = fr.ColumnFile(0, str(src), 50, 3)
    out = tmp_path / "out"
    out.mkdir()
    fr.write_group_file(f, str(out), "g", "k", np.array([50, 52]), np.array([50, 50]), np.array([True, False]))
    t = pq.read_table(out / "00000007.parquet")
    assert t.column("uid").type == pa.string() and t.to_pylist() == [
        {"uid": "a", "g": 50, "k": True}, {"uid": "b", "g": None, "k": None}, {"uid": "c", "g": 50, "k": False}]
    with pytest.raises(fr.DedupError, match="changed while dedup ran"):
        fr.write_group_file(fr.ColumnFile(0, str(src), 50, 4), str(out), "g", "k")
