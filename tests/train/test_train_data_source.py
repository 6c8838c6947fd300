"""info.json's data_source: which subset a run's shards hold, so `evaluate bundle` can check the submitted one."""

from __future__ import annotations

import pyarrow.parquet as pq

from curate.engines.local import LocalEngine
from curate.pool import Pool
from curate.reshard import reshard
from curate.subset import write_subset
from curate.uids import uids_to_pairs
from tests.curate.helpers import write_shard_pool
from train.data import resolve_shards
from train.provenance import data_source, uid_multiset_sha256


def _source(spec: str) -> dict:
    return data_source(spec, resolve_shards(spec))


def test_pool_shards_hash_their_uids_from_json_members(tmp_path):
    write_shard_pool(tmp_path / "pool", [10, 7], seed=1)
    downloaded = []
    for part in sorted((tmp_path / "pool" / "shards").glob("*.parquet")):
        t = pq.read_table(part).to_pylist()
        downloaded += [r["uid"] for r in t if r["status"] == "success"]
    src = _source(str(tmp_path / "pool" / "shards"))
    assert src == {"kind": "uid_multiset", "samples": 17,
                   "uid_multiset_sha256": uid_multiset_sha256(uids_to_pairs(downloaded))}


def test_a_whole_reshard_is_known_by_its_subset_and_part_of_one_by_its_uids(tmp_path):
    meta = write_shard_pool(tmp_path / "pool", [12, 12], seed=2, failed_per_shard=0)
    uids = meta.column("uid").to_pylist()
    chosen = uids[:5] + uids[14:20] + uids[:2]  # two uids upsampled: keys {uid}-0 and {uid}-1
    subset = write_subset(tmp_path / "subset.npy", uids_to_pairs(chosen))
    with LocalEngine(1) as engine:
        stats = reshard(Pool(tmp_path / "pool"), subset, tmp_path / "out", engine, shard_size=5)
    src = _source(str(tmp_path / "out"))
    assert src["kind"] == "subset" and src["subset_sha256"] == stats["subset_sha256"]
    assert src["samples"] == 13 and src["subset_file"] == str(subset)
    # the rows of the subset hash as the resharded samples' uids do
    assert uid_multiset_sha256(uids_to_pairs(chosen)) == _source(str(tmp_path / "out") + "::")["uid_multiset_sha256"]
    part = _source(str(tmp_path / "out" / "00000000.tar"))
    assert part["kind"] == "uid_multiset" and part["samples"] == 5
