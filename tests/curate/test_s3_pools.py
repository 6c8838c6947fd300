"""Pools in object storage: the same commands on an s3:// pool as on a local folder, against a real
S3-compatible server (moto's server) started as its own process on loopback. Outputs are compared byte for
byte with the same commands on a local copy."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.curate.helpers import write_shard_pool

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
pytestmark = pytest.mark.slow

# Files whose bytes hold times or the paths a run was given (compared by name only).
VARYING = ("stage_stats.json", "stats.json", "timings.json", "reshard_stats.json", "report.html",
           "dedup_phash_stats.json", "dedup_sha256_stats.json", "dedup_semantic_stats.json", "decontam_stats.json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forget_s3_filesystems() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 in its own process; the environment every curate process gets."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start: {(tmp_path_factory.getbasetemp())}")
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # fsspec keeps one S3FileSystem per set of arguments, and its client holds the endpoint it was made with:
    # a module after this one (its own server, another port) must not get this module's filesystem back.
    _forget_s3_filesystems()
    try:
        yield env
    finally:
        _forget_s3_filesystems()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture()
def s3(s3_env, request):
    """An empty bucket of its own for each test; the s3fs filesystem to look at it."""
    import s3fs

    fs = s3fs.S3FileSystem(use_listings_cache=False)
    import zlib

    name = request.node.name
    # unique per test and parameter, within S3's 63 characters
    bucket = f"t-{zlib.crc32(name.encode()):08x}-" + name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40].rstrip("-")
    fs.mkdir(bucket)
    return fs, bucket


def curate(*args, env=None, timeout=600):
    progress = ["--no-progress"] if args[0] not in ("export-npz", "fetch-metadata") else []  # those show none
    r = subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args), *progress],
                       capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return r


def ok(*args):
    r = curate(*args)
    assert r.returncode == 0, f"curate {' '.join(map(str, args))}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def s3_files(fs, prefix: str) -> dict[str, bytes]:
    return {k[len(prefix) + 1:]: fs.cat_file(k) for k in sorted(fs.find(prefix))}


def assert_same(local: dict[str, bytes], remote: dict[str, bytes]) -> None:
    assert sorted(local) == sorted(remote)
    differ = [k for k in local if k.rsplit("/", 1)[-1] not in VARYING and local[k] != remote[k]]
    assert not differ, f"differ from the local run: {differ}"


def make_pools(tmp_path, fs, bucket, per_shard=(6, 5, 4, 3)):
    local = tmp_path / "pool"
    write_shard_pool(local, list(per_shard))
    pristine = local_files(local)
    fs.put(str(local), f"{bucket}/pool", recursive=True)
    assert s3_files(fs, f"{bucket}/pool") == pristine
    return local


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_stage_dedup_run_reshard_on_s3_equal_local(tmp_path, s3, engine):
    stage_dedup_run_reshard(tmp_path, s3, ok, ["--engine", engine, "--processes", "2"])


def test_stage_dedup_run_reshard_on_s3_equal_local_on_spark(tmp_path, s3, capsys):
    """The same on Spark (local[2]): executors are Python processes the JVM starts, with the driver's
    environment (the AWS_* variables). One SparkSession serves every command (run in this process: the
    engine takes the active session), since starting one is slow."""
    from curate.cli import main as curate_main
    from curate.engines import make_engine
    from tests.curate.helpers import java_available

    if not java_available():
        pytest.skip("Spark needs Java 17+")

    def in_process(*args):
        capsys.readouterr()
        assert curate_main([*map(str, args), "--no-progress"]) == 0, " ".join(map(str, args))
        return capsys.readouterr().out

    with make_engine("spark", processes=2):
        stage_dedup_run_reshard(tmp_path / "a", s3, in_process, ["--engine", "spark", "--processes", "2"])
        semantic_and_decontaminate(tmp_path / "b", s3, in_process, ["--engine", "spark", "--processes", "2"])


def stage_dedup_run_reshard(tmp_path, s3, ok, eng):
    """stage, dedup (phash, sha256), run and reshard on an s3 pool and a local copy, by `ok` (a command's
    stdout): the same bytes."""
    fs, bucket = s3
    local = make_pools(tmp_path, fs, bucket)
    remote = f"s3://{bucket}/pool"
    for pool in (str(local), remote):
        out = ok("stage", "--pool", pool, "--signals", "phash,sha256", *eng)
        assert "stage: 18 samples in 4 shards (0 already done)" in out
        ok("dedup", "--pool", pool, "--method", "phash", "--max-distance", "8", *eng)
        ok("dedup", "--pool", pool, "--method", "sha256", *eng)
    assert_same(local_files(local), s3_files(fs, f"{bucket}/pool"))
    assert pq.read_table(local / "columns" / "dedup_phash" / "00000000.parquet").num_rows == 6
    assert json.loads(fs.cat_file(f"{bucket}/pool/columns/dedup_phash_stats.json"))["engine"] == eng[1]

    outs = {}
    for pool, base in ((str(local), str(tmp_path)), (remote, f"s3://{bucket}")):
        out = ok("run", "--pool", pool, "--filter", "basic", "--filter", "dedup", "--output", f"{base}/basic", *eng)
        assert "reconcile: True" in out
        ok("reshard", "--pool", pool, "--subset", f"{base}/basic/subset.npy", "--output", f"{base}/again",
           "--shard-size", "3", *eng)
        outs[pool] = out
    assert outs[remote].replace(remote, "POOL").split("\n")[1:3] == outs[str(local)].replace(str(local), "POOL").split("\n")[1:3]
    for name in ("basic", "again"):
        assert_same(local_files(tmp_path / name), s3_files(fs, f"{bucket}/{name}"))
    assert (tmp_path / "again" / "00000001.tar").exists()
    # nothing but whole outputs: no temporary key, no staging folder left behind
    assert not [k for k in fs.find(bucket) if "/." in k], fs.find(bucket)


def test_rerun_skips_done_shards_and_overlap_is_refused(tmp_path, s3):
    fs, bucket = s3
    make_pools(tmp_path, fs, bucket, per_shard=(3, 2))
    remote = f"s3://{bucket}/pool"
    assert "(0 already done)" in ok("stage", "--pool", remote, "--signals", "phash")
    assert "0 shards (2 already done)" in ok("stage", "--pool", remote, "--signals", "phash")
    r = curate("run", "--pool", remote, "--filter", "basic", "--output", f"{remote}/out")
    assert r.returncode != 0 and f"--output {remote}/out is inside --pool {remote}" in r.stderr
    assert not fs.exists(f"{bucket}/pool/out")


def test_killed_stage_on_s3_leaves_only_whole_objects_and_resumes(tmp_path, s3):
    """SIGKILL a stage once its first column object exists: every object under a final name is a whole
    parquet file, and a rerun finishes the rest with the same bytes as a local stage."""
    from tests.faults.killing import kill_after

    fs, bucket = s3
    local = make_pools(tmp_path, fs, bucket, per_shard=[4] * 10)
    remote = f"s3://{bucket}/pool"
    cmd = [sys.executable, "-m", "curate.cli", "stage", "--pool", remote, "--signals", "phash,sha256",
           "--processes", "1", "--no-progress"]
    killed = kill_after(cmd, 0.3, ready=lambda: bool(fs.glob(f"{bucket}/pool/columns/phash/0*.parquet")))
    finals = [k for k in fs.find(f"{bucket}/pool/columns") if k.endswith(".parquet") and "/." not in k]
    for k in finals:
        with fs.open(k, "rb") as f:
            pq.ParquetFile(f).read()  # a half object would not parse
    out = ok("stage", "--pool", remote, "--signals", "phash,sha256")
    if killed:
        assert "already done" in out and "(0 already done)" not in out
    ok("stage", "--pool", str(local), "--signals", "phash,sha256")
    # A kill between a temporary key's upload and its copy leaves that temporary: readers skip it by name, and
    # a rerun removes it once it is older than a writer could still be copying it (here: at once).
    from curate.atomic import is_temporary

    remote_files = s3_files(fs, f"{bucket}/pool")
    leftovers = {k for k in remote_files if is_temporary(k)}
    folders = {f"s3://{bucket}/pool/{k.rsplit('/', 1)[0]}" for k in leftovers}
    removed = {r.split(f"s3://{bucket}/pool/", 1)[1] for r in remove_stale_temporaries_now(folders)}
    assert removed == leftovers
    assert_same(local_files(local), s3_files(fs, f"{bucket}/pool"))


def remove_stale_temporaries_now(folders) -> list[str]:
    from curate.storage import remove_stale_objects

    return [r for f in sorted(folders) for r in remove_stale_objects(f, older_than_s=0)]


# ---- curate dedup --method semantic and curate decontaminate on an s3:// pool ----

def embedding_pool(root: Path, evals: Path):
    """A pool with CLIP embeddings (an .npz beside two partitions, the column store for the third), planted
    semantic duplicates, a pHash column with copies of eval images (and a row without a pHash), an eval set,
    and eval embeddings (a local npz) that copy one pool row. Returns the eval embeddings' path."""
    import numpy as np
    import pyarrow as pa

    from curate.decontaminate import hash_eval_sets
    from tests.curate.dedup.synth import planted_embeddings, write_embedding_pool
    from tests.curate.dedup.test_decontaminate_and_filters import _smooth_png, _write_eval_set

    emb, _ = planted_embeddings(40, 6, seed=3)
    n = len(emb)
    meta = write_embedding_pool(root, emb, [20, n - 30, 10], seed=3, store=(2,))
    uids = meta.column("uid").to_pylist()
    _write_eval_set(evals, "cifar10", [_smooth_png(s) for s in range(4)])
    eval_hashes = hash_eval_sets(evals)[0].column("phash").to_numpy().view(np.uint64)
    rng = np.random.default_rng(33)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    hashes[5], hashes[27] = eval_hashes[0], eval_hashes[2] ^ np.uint64(3)  # distance 0 and 2
    hexes = [f"{int(h):016x}" for h in hashes]
    hexes[9] = None
    (root / "columns" / "phash").mkdir(parents=True)
    for name, rows in (("00000000", range(25)), ("00000001", range(25, n))):
        pq.write_table(pa.table({"uid": pa.array([uids[r] for r in rows], pa.string()),
                                 "phash": pa.array([hexes[r] for r in rows], pa.string())}),
                       root / "columns" / "phash" / f"{name}.parquet")
    q = np.concatenate([emb[[3]] * 2 + rng.normal(scale=0.001, size=(1, emb.shape[1])),
                        rng.normal(size=(2, emb.shape[1]))]).astype(np.float32)
    np.savez(root.parent / "eval_emb.npz", embeddings=q, eval_set=np.array(["cars"] * 3), eval_key=np.array(["e0", "e1", "e2"]))
    return root.parent / "eval_emb.npz"


def semantic_and_decontaminate(tmp_path, s3, ok, eng):
    """`curate dedup --method semantic` and `curate decontaminate` (a local --eval-dir and --eval-embeddings)
    on an s3 pool and a local copy, by `ok`: the same bytes; no staging folder or temporary key is left."""
    fs, bucket = s3
    local, evals = tmp_path / "pool", tmp_path / "evals"
    q = embedding_pool(local, evals)
    remote = f"s3://{bucket}/sem"
    fs.put(str(local), f"{bucket}/sem", recursive=True)
    outs = {}
    for pool in (str(local), remote):
        ok("dedup", "--pool", pool, "--method", "semantic", "--eps", "0.01", "--clusters", "2", *eng)
        outs[pool] = ok("decontaminate", "--pool", pool, "--eval-dir", evals, "--max-distance", "4",
                        "--min-cosine", "0.95", "--eval-embeddings", q, *eng)
    assert "2 pHash matches, 1 cosine matches" in outs[remote]
    same = lambda out, pool: re.sub(r"\(\S+ s on", "(s on", out.replace(pool, "POOL"))  # timings differ
    assert same(outs[remote], remote) == same(outs[str(local)], str(local))
    assert_same(local_files(local), s3_files(fs, f"{bucket}/sem"))
    stats = json.loads(fs.cat_file(f"{bucket}/sem/columns/dedup_semantic_stats.json"))
    assert stats["groups_with_duplicates"] == 6 and stats["engine"] == eng[1]
    assert pq.read_table(local / "decontamination_report.parquet").num_rows == 3
    assert not [k for k in fs.find(f"{bucket}/sem") if "/." in k], fs.find(f"{bucket}/sem")


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_semantic_dedup_and_decontaminate_on_s3_equal_local(tmp_path, s3, engine):
    semantic_and_decontaminate(tmp_path, s3, ok, ["--engine", engine, "--processes", "2"])


# ---- curate download into an s3:// pool, from an s3:// URL list ----

def _url_rows(server, n, seed=0, first=0):
    """n rows of a DataComp list: images, a 404, a refused ftp:// row; the images are written to server.root."""
    import numpy as np
    import pyarrow as pa

    from curate.demo.metadata import random_uids
    from tests.curate.helpers import jpeg_bytes

    uids = random_uids(np.random.default_rng(seed), first + n)[first:]
    urls = []
    for i, uid in enumerate(uids, start=first):
        (server.root / f"{i}.jpg").write_bytes(jpeg_bytes(i))
        urls.append({5: f"{server.base}/img/missing-{i}.jpg", 6: f"ftp://127.0.0.1/{i}.jpg"}.get(i % 7, f"{server.base}/slow/{i}.jpg"))
    return pa.table({"uid": uids, "url": urls, "text": [f"caption {i}" for i in range(first, first + n)]})


def _download_cmd(url_list, pool, *extra):
    return [sys.executable, "-m", "curate.cli", "download", "--url-list", str(url_list), "--pool", str(pool),
            "--allow-private", "--shard-size", "10", "--threads", "4", "--image-size", "32", "--no-progress", *extra]


def _pool_snapshot(fs, bucket, prefix, tmp_path):
    """The canonical content of an s3 pool (tars by members, parquet by rows, JSON without timings), read back."""
    from tests.faults.killing import snapshot

    copy = tmp_path / f"copy-{prefix.replace('/', '-')}"
    fs.get(f"{bucket}/{prefix}/", str(copy), recursive=True)
    return snapshot(copy)


def _etags(fs, prefix):
    return {k: fs.info(k)["ETag"] for k in fs.find(prefix)}


def _no_temporaries(fs, bucket):
    keys = fs.find(bucket)
    return [k for k in keys if "/." in k or "/_tmp/" in k]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_download_into_s3_pool_equals_local_and_resumes(tmp_path, s3, fmt):
    """`curate download --url-list s3://B/urls.* --pool s3://B/pool`: the same shards (tar members, parquet
    rows), metadata and counts as the same download into a local folder; a rerun fetches nothing; a list that
    gained rows fetches only those, into new shards, leaving every earlier object as it was."""
    import pyarrow.csv as pacsv

    from tests.faults.hostile_server import HostileServer
    from tests.faults.killing import snapshot

    fs, bucket = s3
    web = tmp_path / "web"
    web.mkdir()
    with HostileServer(web, tmp_path / "requests.log") as server:
        table = _url_rows(server, 25)
        grown = pa_concat(table, _url_rows(server, 12, first=25))
        write = (lambda t, p: pq.write_table(t, p)) if fmt == "parquet" else (lambda t, p: pacsv.write_csv(t, p))
        write(table, tmp_path / f"urls.{fmt}")
        fs.put_file(str(tmp_path / f"urls.{fmt}"), f"{bucket}/urls.{fmt}")
        remote_list, remote_pool = f"s3://{bucket}/urls.{fmt}", f"s3://{bucket}/pool"

        ok_out = lambda cmd: subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        r = ok_out(_download_cmd(remote_list, remote_pool, "--processes", "2"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "download: 25 rows -> 19 images in 3 shards" in r.stdout and "counts reconcile: True" in r.stdout
        asked = len(server.requested())
        assert asked == 25 - 3  # every http row once; the ftp:// rows are refused before any request
        l = ok_out(_download_cmd(tmp_path / f"urls.{fmt}", tmp_path / "pool", "--processes", "2"))
        assert l.returncode == 0 and l.stdout == r.stdout, l.stdout + l.stderr
        assert _pool_snapshot(fs, bucket, "pool", tmp_path) == snapshot(tmp_path / "pool")
        assert fs.exists(f"{bucket}/pool/shards/00000002.tar") and fs.exists(f"{bucket}/pool/metadata/00000000.parquet")

        before = _etags(fs, f"{bucket}/pool")
        asked = len(server.requested())
        again = ok_out(_download_cmd(remote_list, remote_pool))
        assert again.returncode == 0 and again.stdout == r.stdout, again.stdout + again.stderr
        assert len(server.requested()) == asked  # nothing fetched again
        after = _etags(fs, f"{bucket}/pool")
        assert {k: v for k, v in after.items() if not k.endswith("download_stats.json")} == \
               {k: v for k, v in before.items() if not k.endswith("download_stats.json")}

        write(grown, tmp_path / f"urls.{fmt}")
        fs.put_file(str(tmp_path / f"urls.{fmt}"), f"{bucket}/urls.{fmt}")
        more = ok_out(_download_cmd(remote_list, remote_pool))
        assert more.returncode == 0 and "download: 37 rows -> 27 images in 4 shards" in more.stdout, more.stdout + more.stderr
        new_requests = server.requested()[asked:]
        assert sorted(new_requests) == sorted(
            p for i in range(25, 37) if i % 7 != 6
            for p in [f"/img/missing-{i}.jpg" if i % 7 == 5 else f"/slow/{i}.jpg"])
        grown_etags = _etags(fs, f"{bucket}/pool/shards")
        assert {k: grown_etags[k] for k in before if "/shards/" in k} == {k: v for k, v in before.items() if "/shards/" in k}
        assert ok_out(_download_cmd(tmp_path / f"urls.{fmt}", tmp_path / "pool")).returncode == 0
        assert _pool_snapshot(fs, bucket, "pool", tmp_path / "grown") == snapshot(tmp_path / "pool")
    assert _no_temporaries(fs, bucket) == []


def pa_concat(a, b):
    import pyarrow as pa

    return pa.concat_tables([a, b])


def test_killed_download_into_s3_pool_resumes_to_the_unbroken_result(tmp_path, s3):
    """SIGKILL `curate download` into an s3 pool once two shards are finished: every shard with a stats object
    has a whole tar and parquet, no object is half written, and the rerun gives what an unbroken run gives."""
    from curate.atomic import is_temporary
    from tests.faults.hostile_server import HostileServer
    from tests.faults.killing import kill_after, snapshot

    fs, bucket = s3
    web = tmp_path / "web"
    web.mkdir()
    with HostileServer(web, tmp_path / "requests.log") as server:
        table = _url_rows(server, 120)
        pq.write_table(table, tmp_path / "urls.parquet")
        fs.put_file(str(tmp_path / "urls.parquet"), f"{bucket}/urls.parquet")
        cmd = _download_cmd(f"s3://{bucket}/urls.parquet", f"s3://{bucket}/pool", "--processes", "2", "--threads", "2")
        stats = lambda: [k for k in fs.find(f"{bucket}/pool/shards") if k.endswith("_stats.json")]
        killed = kill_after(cmd, 0.0, ready=lambda: len(stats()) >= 2)
        done_before = stats()
        assert killed and 2 <= len(done_before) < 12, "the kill should land mid-download"
        for k in fs.find(f"{bucket}/pool"):
            if k.endswith(".parquet"):
                with fs.open(k, "rb") as f:
                    pq.ParquetFile(f).read()  # a half object would not parse
        for k in done_before:
            with fs.open(k.replace("_stats.json", ".tar"), "rb") as f:
                import tarfile

                with tarfile.open(fileobj=f) as tar:
                    assert all(tar.extractfile(m).read() is not None for m in tar.getmembers() if m.isfile())
        etags = {k: fs.info(k)["ETag"] for k in done_before}
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and "counts reconcile: True" in r.stdout, r.stdout + r.stderr
        assert {k: fs.info(k)["ETag"] for k in done_before} == etags  # finished shards were not fetched again
        unbroken = subprocess.run(_download_cmd(tmp_path / "urls.parquet", tmp_path / "pool", "--processes", "2"),
                                  capture_output=True, text=True, timeout=600)
        assert unbroken.returncode == 0 and unbroken.stdout == r.stdout, unbroken.stdout + unbroken.stderr
    assert _pool_snapshot(fs, bucket, "pool", tmp_path) == snapshot(tmp_path / "pool")
    assert not [k for k in fs.find(bucket) if is_temporary(k) or "/_tmp/" in k]


def test_download_into_s3_pool_on_dask_equals_local(tmp_path, s3):
    """The Dask engine's workers (threads of a LocalCluster) write the same s3 pool as the local engine."""
    from tests.faults.hostile_server import HostileServer
    from tests.faults.killing import snapshot

    fs, bucket = s3
    (tmp_path / "web").mkdir()
    with HostileServer(tmp_path / "web", tmp_path / "requests.log") as server:
        pq.write_table(_url_rows(server, 25), tmp_path / "urls.parquet")
        fs.put_file(str(tmp_path / "urls.parquet"), f"{bucket}/urls.parquet")
        runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=600) for cmd in (
            _download_cmd(f"s3://{bucket}/urls.parquet", f"s3://{bucket}/pool", "--engine", "dask", "--processes", "2"),
            _download_cmd(tmp_path / "urls.parquet", tmp_path / "pool", "--processes", "2"))]
    assert all(r.returncode == 0 for r in runs), [r.stdout + r.stderr for r in runs]
    assert runs[0].stdout == runs[1].stdout and "19 images in 3 shards" in runs[0].stdout
    assert _pool_snapshot(fs, bucket, "pool", tmp_path) == snapshot(tmp_path / "pool")
    assert _no_temporaries(fs, bucket) == []


def _fetch(pool, hub_root) -> str:
    cmd = [sys.executable, "-m", "curate.cli", "fetch-metadata", "--scale", "small", "--pool", pool, "--hub-root",
           str(hub_root), "--npz"]  # (fetch-metadata has no --no-progress)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_fetch_metadata_into_s3_pool_keeps_partials_locally_and_feeds_download(tmp_path, s3):
    """`curate fetch-metadata --pool s3://...`: the mirror's files land whole under metadata/ and in the record.
    Partial files live on this machine and are appended to (as after a kill): one seeded with wrong bytes makes
    that file fail its check, nothing lands under its name, and a rerun fetches it from zero. A further rerun
    fetches nothing; `curate download --pool s3://...` then takes the pool's own metadata as its list."""
    import shutil

    from curate.fetch_metadata import _work_folder
    from curate.storage import path as storage_path
    from tests.curate.test_fetch_metadata import make_mirror, repo_files

    fs, bucket = s3
    folder = make_mirror(tmp_path / "hub", parts=3, rows=20)
    want = repo_files(folder)
    pool = f"s3://{bucket}/pool"
    first = sorted(want)[0]
    work = _work_folder(storage_path(pool))
    shutil.rmtree(work, ignore_errors=True)
    (work / "partial").mkdir(parents=True)
    (work / "partial" / first).write_bytes(b"\0" * (len(want[first]) // 2))
    try:
        cmd = [sys.executable, "-m", "curate.cli", "fetch-metadata", "--scale", "small", "--pool", pool,
               "--hub-root", str(tmp_path / "hub"), "--npz"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "6 files, 5 fetched" in r.stdout, r.stdout + r.stderr
        assert f"refused, nothing written under metadata/{first}" in r.stderr and "Traceback" not in r.stderr
        assert not fs.exists(f"{bucket}/pool/metadata/{first}")
        assert "6 files, 1 fetched" in _fetch(pool, tmp_path / "hub")
        assert {k.rsplit("/", 1)[-1]: fs.cat_file(k) for k in fs.find(f"{bucket}/pool/metadata")} == want
        record = json.loads(fs.cat_file(f"{bucket}/pool/fetch_metadata.json"))
        assert record["complete"] and sorted(record["files"]) == sorted(want)
        again = _fetch(pool, tmp_path / "hub")
        assert "6 files, 0 fetched (0 bytes), 6 already present and verified" in again
        assert not (work / "partial").exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert _no_temporaries(fs, bucket) == []

    # the pool's own metadata as the list: its URLs (127.0.0.1:1) refuse connections, every row is counted
    r = curate("download", "--pool", pool, "--allow-private", "--shard-size", "50", "--threads", "4", "--timeout", "2")
    assert "download: 60 rows -> 0 images in 2 shards" in r.stdout and "counts reconcile: True" in r.stdout, r.stdout + r.stderr
    assert {k.rsplit("/", 1)[-1]: fs.cat_file(k) for k in fs.find(f"{bucket}/pool/metadata")} == want  # kept as it is


def test_export_npz_on_s3_pool_equals_local(tmp_path, s3):
    """`curate export-npz --pool s3://...` (to the pool's own npz/, and to an --output elsewhere in the store):
    the same arrays and parquet bytes as on a local pool; an --output inside the pool is refused."""
    import numpy as np

    from tests.curate.test_integrity import add_clip_columns

    fs, bucket = s3
    local = tmp_path / "pool"
    write_shard_pool(local, [6, 5], seed=7, failed_per_shard=1)
    add_clip_columns(local)
    fs.put(str(local), f"{bucket}/pool", recursive=True)
    remote = f"s3://{bucket}/pool"
    for pool in (str(local), remote):
        assert "export-npz: 13 rows of t in 2 shards" in ok("export-npz", "--pool", pool)
    assert "13 rows of t in 2 shards" in ok("export-npz", "--pool", remote, "--output", f"s3://{bucket}/elsewhere")
    for prefix in ("pool/npz", "elsewhere"):
        got = s3_files(fs, f"{bucket}/{prefix}")
        want = local_files(local / "npz")
        assert sorted(got) == sorted(want) == ["00000000.npz", "00000000.parquet", "00000001.npz", "00000001.parquet"]
        for name in want:
            if name.endswith(".parquet"):
                assert got[name] == want[name]
            else:  # an npz (a zip) records the time it was written: compare the arrays
                import io

                with np.load(io.BytesIO(got[name])) as a, np.load(io.BytesIO(want[name])) as b:
                    assert sorted(a.files) == sorted(b.files) == ["t_img", "t_txt"]
                    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    r = curate("export-npz", "--pool", remote, "--output", f"{remote}/columns/x")
    assert r.returncode != 0 and "is inside the pool" in r.stderr and "Traceback" not in r.stderr
    assert _no_temporaries(fs, bucket) == []


# ---- CLIP embeddings and the aesthetic score, staged into an s3:// pool ----

def test_stage_clip_and_aesthetic_on_s3_equal_local_and_recompute_from_stored_embeddings(tmp_path, s3):
    """`stage --signals clip,aesthetic` on a tiny open_clip model (random weights, made here): the same objects on
    S3 as files in a local copy; an aesthetic object deleted is recomputed from the embeddings stored on S3 (no
    model loaded), to the same bytes."""
    import torch

    from curate.signals.aesthetic import build_mlp
    from tests.curate.helpers import tiny_clip_checkpoint

    fs, bucket = s3
    local = make_pools(tmp_path, fs, bucket, per_shard=(5, 4))
    remote = f"s3://{bucket}/pool"
    ckpt = tiny_clip_checkpoint(tmp_path / "tiny.pt")
    torch.manual_seed(3)
    torch.save(build_mlp(64).state_dict(), tmp_path / "aesthetic.pth")  # the v2 layout at the tiny model's width
    args = ["--signals", "clip,aesthetic", "--model", "datacomp-tiny", "--pretrained", ckpt, "--clip-tag", "tiny",
            "--aesthetic-weights", tmp_path / "aesthetic.pth", "--aesthetic-model", "datacomp-tiny",
            "--aesthetic-pretrained", ckpt, "--device", "cpu", "--batch-size", "4"]
    for pool in (remote, local):
        ok("stage", "--pool", pool, *args)
    assert_same(local_files(local), s3_files(fs, f"{bucket}/pool"))
    assert pq.read_table(local / "columns" / "aesthetic" / "00000000.parquet").num_rows == 5
    key = f"{bucket}/pool/columns/aesthetic/00000001.parquet"
    before = fs.cat_file(key)
    fs.rm(key)
    out = ok("stage", "--pool", remote, *args)
    assert "(1 already done)" in out, out
    assert fs.cat_file(key) == before
    assert not _no_temporaries(fs, bucket)


def test_a_task_writing_after_its_run_ended_leaves_no_object(tmp_path, s3):
    """On a store a late task's run cannot fail for want of a folder, so it would put the spill prefix back:
    write_run finds the folder's `.live` marker gone and deletes what it wrote."""
    import numpy as np

    from curate.spill import LIVE, SpillGone, spill_folder, write_run
    from curate.subset import sort_pairs
    from curate.uids import UID_DTYPE

    fs, bucket = s3
    pairs = np.zeros(3, UID_DTYPE)
    pairs["f1"] = [3, 1, 2]
    pairs = sort_pairs(pairs)
    with spill_folder(f"s3://{bucket}/out") as folder:
        key = folder.split("://", 1)[1]
        assert fs.exists(f"{key}/{LIVE}")
        assert write_run(folder, 0, pairs)["rows"] == 3
    assert not fs.exists(key) and fs.find(f"{bucket}/out") == []
    with pytest.raises(SpillGone):
        write_run(folder, 1, pairs)
    assert fs.find(f"{bucket}/out") == []
