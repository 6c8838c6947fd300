"""A resumed stage: its stats describe every shard's columns, whichever run wrote them, and no temporary of
the killed run is left."""

import json
import tarfile

from curate.atomic import is_temporary
from curate.engines import LocalEngine
from curate.pool import Pool
from curate.stage import run_stage
from tests.curate.helpers import add_member, write_shard_pool


def test_stats_of_a_resumed_stage_count_the_whole_pool(tmp_path):
    root = tmp_path / "pool"
    write_shard_pool(root, [7, 6, 5, 4], seed=1, failed_per_shard=0)
    with tarfile.open(root / "shards" / "00000002.tar", "a") as tar:  # one image that does not decode
        add_member(tar, "bad.jpg", b"\xff\xd8\xffjunk")
        add_member(tar, "bad.json", json.dumps({"uid": "f" * 32}).encode())
    with LocalEngine(1) as engine:
        whole = run_stage(Pool(root), ["phash", "sha256"], engine)
        # as a killed stage leaves it: some shards done, some not, and a temporary of the write it was in
        for name in ("00000000.parquet", "00000003.parquet"):
            (root / "columns" / "phash" / name).unlink()
        leftover = root / "columns" / "phash" / ".00000000.parquet.k1ll3d00.tmp"
        leftover.write_bytes(b"PAR1 half a file")
        resumed = run_stage(Pool(root), ["phash", "sha256"], engine)
    assert resumed["shards_computed"] == 2 and resumed["shards_skipped"] == 2
    expected = {"samples": 23, "ok": 22, "failed": {"unidentified": 1}}
    assert whole["per_signal"]["phash"] == resumed["per_signal"]["phash"] == expected
    assert resumed["per_signal"]["sha256"]["samples"] == 23  # sha256 was all done before: still counted
    on_disk = json.loads((root / "columns" / "stage_stats.json").read_text())
    assert on_disk["per_signal"] == resumed["per_signal"]
    assert not [p for p in (root / "columns").rglob("*") if is_temporary(p)]
