import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import imagehash
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.engines import LocalEngine
from curate.pool import Pool
from curate.stage import StageError, read_signal, run_stage
from tests.curate.helpers import add_member, tar_samples, write_shard_pool


def _append_bad_samples(tar_path, uids):
    """A corrupt image, a zero-byte image, a sample with no image, and a bomb header."""
    from tests.signals.images import png_header

    with tarfile.open(tar_path, "a") as tar:
        for i, (uid, files) in enumerate(zip(uids, [{"jpg": b"\xff\xd8\xffjunk"}, {"jpg": b""}, {"txt": b"no image"},
                                                     {"png": png_header(100000, 100000)}])):
            for ext, data in files.items():
                add_member(tar, f"bad{i}.{ext}", data)
            add_member(tar, f"bad{i}.json", json.dumps({"uid": uid}).encode())


def test_phash_and_sha256_columns(tmp_path):
    root = tmp_path / "pool"
    meta = write_shard_pool(root, [6, 5], seed=2, failed_per_shard=0)
    bad = [f"{i:032x}" for i in range(1, 5)]
    _append_bad_samples(root / "shards" / "00000001.tar", bad)
    with LocalEngine(1) as engine:
        stats = run_stage(Pool(root), ["phash", "sha256"], engine)
    assert stats["samples"] == 15 and stats["per_signal"]["phash"]["ok"] == 11
    assert stats["per_signal"]["phash"]["failed"] == {"unidentified": 1, "empty": 1, "no_image": 1, "too_many_pixels": 1}
    assert stats["per_signal"]["sha256"] == {"samples": 15, "ok": 14, "failed": {"no_image": 1}}
    ph = read_signal(Pool(root), "phash").to_pylist()
    sh = read_signal(Pool(root), "sha256").to_pylist()
    by_uid = {}
    for t in sorted((root / "shards").glob("*.tar")):
        for _, files in tar_samples(t):
            by_uid[json.loads(files["json"])["uid"]] = files
    assert len(ph) == 15
    for row, srow in zip(ph, sh):
        files = by_uid[row["uid"]]
        data = files.get("jpg", files.get("png"))
        if row["status"] == "ok":
            assert row["phash"] == str(imagehash.phash(Image.open(io.BytesIO(data))))
        else:
            assert row["phash"] is None and row["uid"] in bad
        if data is not None:
            assert srow["sha256"] == hashlib.sha256(data).hexdigest()


def test_unknown_signal_and_empty_pool(tmp_path):
    write_shard_pool(tmp_path / "pool", [2])
    with LocalEngine(1) as engine:
        with pytest.raises(StageError, match="unknown signal.*clipp"):
            run_stage(Pool(tmp_path / "pool"), ["clipp"], engine)
    (tmp_path / "empty").mkdir()
    with LocalEngine(1) as engine, pytest.raises(StageError, match="no whole shards"):
        run_stage(Pool(tmp_path / "empty"), ["phash"], engine)


def _column_bytes(root):
    return {p.relative_to(root).as_posix(): pq.read_table(p).to_pylist()
            for p in sorted((root / "columns").glob("*/*.parquet"))}


def test_killed_stage_resumes_to_the_same_files(tmp_path):
    root = tmp_path / "pool"
    write_shard_pool(root, [30] * 16, seed=4, failed_per_shard=0)
    ref = tmp_path / "ref"
    write_shard_pool(ref, [30] * 16, seed=4, failed_per_shard=0)
    with LocalEngine(1) as engine:
        run_stage(Pool(ref), ["phash", "sha256"], engine)
    cmd = [sys.executable, "-m", "curate.cli", "stage", "--pool", str(root), "--signals", "phash,sha256", "--processes", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((root / "columns" / "sha256").glob("*.parquet"))) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list((root / "columns" / "sha256").glob("*.parquet")))
    assert 2 <= partial < 16, "the kill should land mid-stage"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for signal_name in ("phash", "sha256"):  # a killed write leaves only a hidden temporary, never a whole-looking file
        assert len(read_signal(Pool(root), signal_name)) == 16 * 30
    assert _column_bytes(root) == _column_bytes(ref)
