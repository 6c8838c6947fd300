"""`curate fetch-metadata`: DataComp's metadata from a hub mirror (--hub-root) or a hub on 127.0.0.1, verified,
resumable after kill -9, and then `curate download --pool POOL` on it."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.demo.metadata import generate_metadata, random_uids
from curate.demo.server import LoopbackImageServer
from curate.fetch_metadata import patterns_for, repo_for
from curate.hub import MIRROR_MANIFEST, write_mirror_manifest
from tests.curate.loopback_hub import LoopbackHub
from tests.curate.test_download import _image
from tests.faults.killing import kill_after

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def curate(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def datacomp_table(n: int, seed: int, url_prefix: str = "http://127.0.0.1:1/img/") -> pa.Table:
    """DataComp's metadata columns, face_bboxes included."""
    t = generate_metadata(n, seed=seed, url_prefix=url_prefix)
    boxes = [[[0.1, 0.1, 0.3, 0.4]] if i % 3 == 0 else [] for i in range(n)]
    return t.append_column("face_bboxes", pa.array(boxes, pa.list_(pa.list_(pa.float64()))))


def write_npz(path, n: int, seed: int, pad: int = 0) -> None:
    """DataComp's embeddings file: b32/l14 image and text embeddings, float16, one row per parquet row."""
    rng = np.random.default_rng(seed)
    arrays = {k: rng.standard_normal((n + pad, d)).astype(np.float16)
              for k, d in (("b32_img", 512), ("b32_txt", 512), ("l14_img", 768), ("l14_txt", 768))}
    np.savez(path, **arrays)


def make_mirror(hub_root, scale="small", parts=3, rows=40, npz=True, url_prefix="http://127.0.0.1:1/img/", pad=0):
    """A mirror of mlfoundations/datacomp_<scale>: parquet (+ npz) per part, DataComp's names, and a manifest."""
    folder = hub_root / repo_for(scale)
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# not metadata\n")
    names = random_uids(np.random.default_rng(len(str(hub_root))), parts)
    for i, name in enumerate(names):
        sub = folder / f"part_{i:05d}" if scale == "xlarge" else folder
        sub.mkdir(exist_ok=True)
        pq.write_table(datacomp_table(rows, seed=i, url_prefix=url_prefix), sub / f"{name}.parquet")
        if npz:
            write_npz(sub / f"{name}.npz", rows, seed=i, pad=pad)
    write_mirror_manifest(folder, COMMIT)
    return folder


def repo_files(folder, suffixes=(".parquet", ".npz")):
    """{flattened name: bytes} of the mirror's metadata files."""
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.suffix in suffixes}


def pool_files(pool):
    return {p.name: p.read_bytes() for p in sorted((pool / "metadata").iterdir())}


def test_datacomp_repos_and_patterns():
    assert repo_for("small") == "mlfoundations/datacomp_small"
    assert repo_for("datacomp_1b") == "mlfoundations/datacomp_1b"
    assert patterns_for("medium", False) == ["*.parquet"]
    assert patterns_for("xlarge", True) == ["*/*.parquet", "*/*.npz"]


def test_fetch_parquet_then_npz_from_a_mirror(tmp_path):
    folder = make_mirror(tmp_path / "hub")
    pool = tmp_path / "pool"
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub", "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert pool_files(pool) == repo_files(folder, (".parquet",))  # README.md and the .npz files stay behind
    assert "3 fetched" in out.stdout and COMMIT in out.stdout
    record = json.loads((pool / "fetch_metadata.json").read_text())
    assert record["repo"] == "mlfoundations/datacomp_small" and record["commit"] == COMMIT and record["complete"]
    manifest = {e["path"]: e["lfs"]["oid"] for e in json.loads((folder / MIRROR_MANIFEST).read_text())["files"]}
    assert len(record["files"]) == 3 and all(manifest[f["path"]] == f["sha256"] for f in record["files"].values())
    assert not (pool / "_fetch" / "partial").exists()

    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub", "--npz")
    assert out.returncode == 0, out.stderr
    assert "3 fetched" in out.stdout and "3 already present" in out.stdout  # the parquet files are not read again
    assert pool_files(pool) == repo_files(folder)
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub", "--npz")
    assert out.returncode == 0 and "0 fetched" in out.stdout and "6 already present" in out.stdout


def test_xlarge_part_folders_are_flattened(tmp_path):
    folder = make_mirror(tmp_path / "hub", scale="xlarge", parts=2, rows=10)
    (folder / "stray.parquet").write_bytes(b"not in a part folder: DataComp's */*.parquet does not take it")
    write_mirror_manifest(folder, COMMIT)
    pool = tmp_path / "pool"
    out = curate("fetch-metadata", "--scale", "xlarge", "--pool", pool, "--hub-root", tmp_path / "hub", "--npz")
    assert out.returncode == 0, out.stderr
    want = {p.name: p.read_bytes() for p in folder.glob("part_*/*")}
    assert pool_files(pool) == want and len(want) == 4


def test_corrupt_and_truncated_mirror_files_are_refused(tmp_path):
    folder = make_mirror(tmp_path / "hub", npz=False)
    good, flipped, cut = sorted(folder.glob("*.parquet"))
    flipped_bytes = flipped.read_bytes()
    data = bytearray(flipped_bytes)
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))  # same size, other bytes
    cut_bytes = cut.read_bytes()
    cut.write_bytes(cut_bytes[:100])
    pool = tmp_path / "pool"
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub")
    assert out.returncode == 1
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 2, out.stderr
    assert any(flipped.name in e and "sha256" in e and "refused" in e for e in errors), errors
    assert any(cut.name in e and f"100 bytes where mirror {folder} states {len(cut_bytes)}" in e for e in errors), errors
    assert sorted(pool_files(pool)) == [good.name]  # nothing under a wrong file's name
    assert not any((pool / "_fetch" / "partial").iterdir())  # nor kept to resume from
    assert not json.loads((pool / "fetch_metadata.json").read_text())["complete"]

    flipped.write_bytes(flipped_bytes)
    cut.write_bytes(cut_bytes)
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub")
    assert out.returncode == 0, out.stderr
    assert pool_files(pool) == repo_files(folder) and "2 fetched" in out.stdout


def test_a_present_file_that_changed_is_fetched_again(tmp_path):
    folder = make_mirror(tmp_path / "hub", npz=False)
    pool = tmp_path / "pool"
    assert curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub").returncode == 0
    victim = sorted((pool / "metadata").iterdir())[0]
    victim.write_bytes(b"\0" * victim.stat().st_size)  # same size: only its digest tells
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub")
    assert out.returncode == 0, out.stderr
    assert "1 fetched" in out.stdout and pool_files(pool) == repo_files(folder)


def test_what_cannot_be_fetched_is_one_line(tmp_path):
    hub = tmp_path / "hub"
    pool = tmp_path / "pool"
    cases = []
    out = curate("fetch-metadata", "--scale", "medium", "--pool", pool, "--hub-root", hub)
    cases.append((out, "mlfoundations/datacomp_medium: not found under hub root"))
    folder = make_mirror(hub, npz=False)
    (folder / MIRROR_MANIFEST).unlink()
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", hub)
    cases.append((out, "the mirror states nothing to verify its files against"))
    write_mirror_manifest(folder, COMMIT)
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", hub, "--revision", "v2")
    cases.append((out, f"holds revision {COMMIT}, not v2"))
    (pool / "metadata").mkdir(parents=True)
    pq.write_table(datacomp_table(3, 0), pool / "metadata" / "00000000.parquet")  # a pool from another list
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", hub)
    cases.append((out, "holds files that are not mlfoundations/datacomp_small@"))
    out = curate("fetch-metadata", "--scale", "small", "--pool", hub / "pool", "--hub-root", hub)
    cases.append((out, "is inside --hub-root"))
    for out, words in cases:
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("curate fetch-metadata: error: ") and words in lines[0], lines


def _hub_env(hub: LoopbackHub, tmp_path) -> dict:
    return {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": ""}


def test_killed_fetch_from_the_hub_resumes_where_it_stopped(tmp_path):
    """Through huggingface_hub against a hub on 127.0.0.1 serving slowly: kill -9 half-way through a file, then
    the rerun asks for the rest of it (a Range request) and ends with every file whole and identical."""
    folder = make_mirror(tmp_path / "hub", parts=2, rows=40, pad=400)  # npz files of ~2.2 MB, sent in 64 KiB steps
    pool = tmp_path / "pool"
    cmd = [sys.executable, "-m", "curate.cli", "fetch-metadata", "--scale", "small", "--pool", str(pool), "--npz",
           "--workers", "1"]
    partial = pool / "_fetch" / "partial"

    def half_way() -> bool:
        return any(p.suffix == ".npz" and p.stat().st_size >= 512 * 1024 for p in partial.glob("*")) \
            if partial.is_dir() else False

    with LoopbackHub(tmp_path / "hub", delay=0.02, log=tmp_path / "requests.log") as hub:
        assert kill_after(cmd, 0, ready=half_way, env=_hub_env(hub, tmp_path), timeout=120)
        halves = {p.name: p.stat().st_size for p in partial.glob("*.npz")}
        assert halves and all(n < (folder / name).stat().st_size for name, n in halves.items())
        # no final name holds a half file
        for p in (pool / "metadata").iterdir():
            assert p.read_bytes() == (folder / p.name).read_bytes()
        hub.delay = 0
        out = curate(*cmd[3:], env=_hub_env(hub, tmp_path))
        assert out.returncode == 0, out.stderr
        resumed = [line for line in hub.requests() if line.split()[0] in halves and int(line.split()[1]) > 0]
        assert resumed, hub.requests()
    assert pool_files(pool) == repo_files(folder)
    assert "datasets/mlfoundations/datacomp_small" in json.loads((pool / "fetch_metadata.json").read_text())["source"]


def test_download_takes_the_fetched_metadata_as_its_list(tmp_path):
    """fetch-metadata, then `curate download --pool POOL` against a loopback web: DataComp's files (extra
    columns, the npz beside each parquet) stay byte for byte, and the counts reconcile."""
    web = tmp_path / "web"
    web.mkdir()
    with LoopbackImageServer(web) as server:
        folder = make_mirror(tmp_path / "hub", parts=2, rows=12, url_prefix=server.url(""))
        rows = pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("*.parquet"))])
        uids = rows.column("uid").to_pylist()
        for i, uid in enumerate(uids):
            if i % 4:  # every 4th image is missing: a 404
                (web / f"{uid}.jpg").write_bytes(_image(i))
        pool = tmp_path / "pool"
        out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub", "--npz")
        assert out.returncode == 0, out.stderr
        before = pool_files(pool)
        out = curate("download", "--pool", pool, "--allow-private", "--image-size", "32", "--shard-size", "10",
                     "--processes", "1", "--threads", "4")
        assert out.returncode == 0, out.stderr + out.stdout
    assert pool_files(pool) == before  # not rewritten, nothing added
    stats = json.loads((pool / "download_stats.json").read_text())
    assert stats["input_rows"] == 24 and stats["reconciled"]
    assert stats["success"] == sum(1 for i in range(24) if i % 4) and stats["failed_to_download"] == 6
    keys = {m for p in (pool / "shards").glob("*.parquet") for m in pq.read_table(p).column("uid").to_pylist()}
    assert keys == set(uids)

    out = curate("download", "--pool", tmp_path / "nowhere")
    assert out.returncode == 2 and "no metadata in this pool" in out.stderr and "fetch-metadata" in out.stderr


def test_a_file_without_lfs_metadata_is_checked_by_its_git_blob_id(tmp_path):
    """The hub states only a git blob id for a file not in LFS: the file is checked against that (the id git
    itself computes), and a file that differs is refused."""
    folder = make_mirror(tmp_path / "hub", parts=2, npz=False)
    manifest = json.loads((folder / MIRROR_MANIFEST).read_text())
    for entry in manifest["files"]:
        entry.pop("lfs")
        git = subprocess.run(["git", "hash-object", str(folder / entry["path"])], capture_output=True, text=True)
        assert entry["oid"] == git.stdout.strip()
    (folder / MIRROR_MANIFEST).write_text(json.dumps(manifest))
    kept, changed = sorted(folder.glob("*.parquet"))
    data = changed.read_bytes()
    changed.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    pool = tmp_path / "pool"
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub")
    assert out.returncode == 1 and "git blob id" in out.stderr and changed.name in out.stderr
    assert sorted(pool_files(pool)) == [kept.name]
    changed.write_bytes(data)
    out = curate("fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root", tmp_path / "hub")
    assert out.returncode == 0 and pool_files(pool) == repo_files(folder)
