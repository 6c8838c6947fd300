"""Eval sets and the CLIP stage in object storage: `curate embed-evals` reading an s3:// eval folder and writing
its npz to S3, `curate decontaminate` with an s3:// --eval-dir and --eval-embeddings, and `curate stage --signals
clip` on an s3:// pool, each against the same command on a local copy (byte for byte), on the moto server of
test_s3_pools (its own process on loopback). A tiny open_clip model with random weights (made here) stands in
for the pool's CLIP model; its checkpoint stays a local file."""
# ruff: noqa: F811

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

# the moto server and bucket fixtures of test_s3_pools (the tests' `s3` argument is that fixture)
from tests.curate.test_s3_pools import assert_same, local_files, s3, s3_env, s3_files  # noqa: F401

pytestmark = pytest.mark.slow

TINY = "datacomp-tiny"
QUIET = ("stage", "decontaminate")  # the commands here that show progress (embed-evals shows none)


def curate(*args):
    quiet = ["--no-progress"] if args[0] in QUIET else []
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args), *quiet], capture_output=True, text=True,
                          timeout=600, check=False)


def ok(*args) -> str:
    r = curate(*args)
    assert r.returncode == 0, f"curate {' '.join(map(str, args))}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.curate.helpers import tiny_clip_checkpoint

    return str(tiny_clip_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt"))


def model_args(checkpoint) -> list[str]:
    return ["--model", TINY, "--pretrained", checkpoint, "--clip-tag", "tiny", "--device", "cpu"]


def pool_and_evals(tmp_path, fs, bucket, per_shard=(6, 5, 4)):
    """A local pool and eval folder (two eval sets holding byte copies of pool images 2 and the last, other images and
    an image that does not decode), and the same two uploaded under s3://bucket/{pool,evals}. Returns (local
    pool, local evals, the pool's uids)."""
    from tests.curate.dedup.test_decontaminate_and_filters import _smooth_png, _write_eval_set
    from tests.curate.helpers import tar_samples, write_shard_pool

    local, evals = tmp_path / "pool", tmp_path / "evals"
    write_shard_pool(local, list(per_shard), seed=3, failed_per_shard=1)
    images = {}
    for t in sorted((local / "shards").glob("*.tar")):
        for _, files in tar_samples(t):
            images[json.loads(files["json"])["uid"]] = files["jpg"]
    uids = list(images)
    _write_eval_set(evals, "cars", [images[uids[2]], _smooth_png(1), b"\x89PNG\r\n\x1a\nbroken"])
    _write_eval_set(evals, "pets", [_smooth_png(2), images[uids[-1]]])
    fs.put(str(local), f"{bucket}/pool", recursive=True)
    fs.put(str(evals), f"{bucket}/evals", recursive=True)
    return local, evals, uids


def npz_arrays(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def no_temporaries(fs, bucket) -> list[str]:
    return [k for k in fs.find(bucket) if "/." in k]


def same_stdout(out: str, pool: str) -> str:
    return re.sub(r"\(\S+ s on", "(s on", re.sub(r"[\d.]+ images/s", "N images/s", out.replace(pool, "POOL")))


def stage_embed_decontaminate(tmp_path, s3, checkpoint, run, eng):
    """stage --signals phash,clip on an s3 pool and a local copy; embed-evals from s3://…/evals to an s3 npz and
    from the local evals to a local npz; decontaminate with both --eval-dir and --eval-embeddings on S3 and
    locally. `run` runs one command and returns its stdout. Every output equals the local one."""
    fs, bucket = s3
    local, evals, uids = pool_and_evals(tmp_path, fs, bucket)
    remote = f"s3://{bucket}/pool"
    outs = {}
    for pool in (str(local), remote):
        out = run("stage", "--pool", pool, "--signals", "phash,clip", *model_args(checkpoint), *eng)
        assert "stage: 15 samples in 3 shards (0 already done)" in out and "clip_tiny    in 15  ok 15" in out, out
        outs[pool] = out
    assert same_stdout(outs[remote], remote) == same_stdout(outs[str(local)], str(local))
    assert_same(local_files(local), s3_files(fs, f"{bucket}/pool"))
    assert pq.read_table(local / "columns" / "clip_tiny" / "00000000.parquet").num_rows == 6

    npz = {"local": tmp_path / "eval_emb.npz", "s3": f"s3://{bucket}/emb/eval_emb.npz"}
    for evals_dir, output in ((evals, npz["local"]), (f"s3://{bucket}/evals", npz["s3"])):
        out = run("embed-evals", "--eval-dir", evals_dir, "--output", output, *model_args(checkpoint))
        assert "embed-evals: 4 eval images embedded" in out and str(output) in out, out
        assert '"cars": 1' in out  # the image that does not decode is counted, not embedded
    got, want = npz_arrays(fs.cat_file(f"{bucket}/emb/eval_emb.npz")), npz_arrays(npz["local"].read_bytes())
    assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)  # a zip records its time
    assert got["eval_set"].tolist() == ["cars", "cars", "pets", "pets"] and got["eval_key"].tolist() == ["s0000", "s0001", "s0000", "s0001"]

    for pool, evals_dir, emb in ((str(local), evals, npz["local"]), (remote, f"s3://{bucket}/evals", npz["s3"])):
        outs[pool] = run("decontaminate", "--pool", pool, "--eval-dir", evals_dir, "--max-distance", "4",
                         "--eval-embeddings", emb, "--min-cosine", "0.999", "--arch", "tiny", *eng)
    assert same_stdout(outs[remote], remote) == same_stdout(outs[str(local)], str(local))
    assert "4 eval images vs 15 pool pHashes" in outs[remote]
    assert_same(local_files(local), s3_files(fs, f"{bucket}/pool"))
    report = pq.read_table(local / "decontamination_report.parquet").to_pylist()
    found = {(r["pool_uid"], r["eval_set"], r["eval_key"], r["method"]) for r in report}
    for uid, name, key in ((uids[2], "cars", "s0000"), (uids[-1], "pets", "s0001")):
        assert {(uid, name, key, "phash"), (uid, name, key, "cosine")} <= found  # byte copies: both methods
    stats = json.loads(fs.cat_file(f"{bucket}/pool/columns/decontam_stats.json"))
    assert stats["eval_dir"] == f"s3://{bucket}/evals" and stats["engine"] == eng[1]
    assert no_temporaries(fs, bucket) == []


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_stage_clip_embed_evals_and_decontaminate_on_s3_equal_local(tmp_path, s3, checkpoint, engine):
    stage_embed_decontaminate(tmp_path, s3, checkpoint, ok, ["--engine", engine, "--processes", "2"])


def test_stage_clip_embed_evals_and_decontaminate_on_s3_equal_local_on_spark(tmp_path, s3, checkpoint, capsys):
    """The same on Spark (local[2]), one SparkSession for every command (run in this process)."""
    from curate.cli import main as curate_main
    from curate.engines import make_engine
    from tests.curate.helpers import java_available

    if not java_available():
        pytest.skip("Spark needs Java 17+")

    def in_process(*args):
        capsys.readouterr()
        progress = ["--no-progress"] if args[0] in QUIET else []
        assert curate_main([*map(str, args), *progress]) == 0, " ".join(map(str, args))
        return capsys.readouterr().out

    with make_engine("spark", processes=2):
        stage_embed_decontaminate(tmp_path, s3, checkpoint, in_process, ["--engine", "spark", "--processes", "2"])


def one_line_error(r, *parts):
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    for part in parts:
        assert part in r.stderr, r.stderr


def test_missing_eval_prefix_and_model_urls_are_one_line(tmp_path, s3, checkpoint):
    """A missing eval prefix (in a bucket, or no bucket at all), a prefix without eval sets and a missing npz
    object: one line naming it, nothing written. A model file given as an s3:// URL is refused by name."""
    fs, bucket = s3
    pool_and_evals(tmp_path, fs, bucket, per_shard=(3,))
    remote = f"s3://{bucket}/pool"
    ok("stage", "--pool", remote, "--signals", "phash")
    before = s3_files(fs, f"{bucket}/pool")
    for missing in (f"s3://{bucket}/nope", "s3://no-such-bucket-here/evals"):
        one_line_error(curate("decontaminate", "--pool", remote, "--eval-dir", missing), f"eval folder not found: {missing}")
        one_line_error(curate("embed-evals", "--eval-dir", missing, "--output", f"s3://{bucket}/e.npz",
                              *model_args(checkpoint)), f"eval folder not found: {missing}")
    one_line_error(curate("decontaminate", "--pool", remote, "--eval-dir", f"s3://{bucket}/pool"),
                   f"s3://{bucket}/pool: no eval sets")
    one_line_error(curate("decontaminate", "--pool", remote, "--eval-dir", f"s3://{bucket}/evals", "--min-cosine", "0.9",
                          "--eval-embeddings", f"s3://{bucket}/none.npz"), f"--eval-embeddings s3://{bucket}/none.npz: file not found")
    fs.put_file(checkpoint, f"{bucket}/tiny.pt")
    weights = ["--model", TINY, "--pretrained", f"s3://{bucket}/tiny.pt", "--device", "cpu"]
    refused = f"--pretrained does not take object-store paths yet (s3://{bucket}/tiny.pt); use a local file"
    one_line_error(curate("stage", "--pool", remote, "--signals", "clip", *weights), refused)
    one_line_error(curate("embed-evals", "--eval-dir", f"s3://{bucket}/evals", "--output", f"s3://{bucket}/e.npz", *weights), refused)
    one_line_error(curate("stage", "--pool", remote, "--signals", "language", "--fasttext-model", f"s3://{bucket}/lid.bin"),
                   "--fasttext-model does not take object-store paths yet")
    assert s3_files(fs, f"{bucket}/pool") == before
    assert not fs.exists(f"{bucket}/e.npz") and no_temporaries(fs, bucket) == []


def test_failures_leave_no_partial_object_under_a_final_key(tmp_path, s3, checkpoint):
    """An eval tar on S3 that breaks half way: embed-evals and decontaminate fail in one line naming it, and the
    objects a good run wrote before (npz, decontam columns, report) stay as they were; no temporary is left.
    A decontaminate killed (SIGKILL) while its tasks upload column pieces leaves only whole objects under final
    keys, and its rerun leaves what a local run leaves."""
    from tests.faults.killing import kill_after

    fs, bucket = s3
    local, evals, _ = pool_and_evals(tmp_path, fs, bucket, per_shard=(4, 4, 4, 4, 4, 4))
    remote, s3_evals, npz = f"s3://{bucket}/pool", f"s3://{bucket}/evals", f"s3://{bucket}/eval_emb.npz"
    ok("stage", "--pool", remote, "--signals", "phash")
    ok("embed-evals", "--eval-dir", s3_evals, "--output", npz, *model_args(checkpoint))
    decon = ("decontaminate", "--pool", remote, "--eval-dir", s3_evals, "--max-distance", "4")
    ok(*decon)
    good = {k: fs.info(k)["ETag"] for k in fs.find(bucket)}

    whole = fs.cat_file(f"{bucket}/evals/wds_pets_test/test/0.tar")
    fs.pipe_file(f"{bucket}/evals/wds_pets_test/test/0.tar", whole[:len(whole) // 2 + 100])  # cut inside a member
    broken = f"{s3_evals}/wds_pets_test/test/0.tar: not a readable tar"
    one_line_error(curate("embed-evals", "--eval-dir", s3_evals, "--output", npz, *model_args(checkpoint)), broken)
    one_line_error(curate(*decon), broken)
    assert {k: fs.info(k)["ETag"] for k in fs.find(bucket) if not k.endswith("/0.tar")} == \
           {k: v for k, v in good.items() if not k.endswith("/0.tar")}
    fs.pipe_file(f"{bucket}/evals/wds_pets_test/test/0.tar", whole)

    cmd = [sys.executable, "-m", "curate.cli", *decon, "--processes", "1", "--no-progress"]
    fs.rm(f"{bucket}/pool/columns/decontam", recursive=True)
    fs.rm_file(f"{bucket}/pool/decontamination_report.parquet")
    killed = kill_after(cmd, 0.0, ready=lambda: bool(fs.glob(f"{bucket}/pool/.decontam.staging/*.parquet")))
    for k in fs.find(f"{bucket}/pool"):
        if k.endswith(".parquet") and "/." not in k:
            with fs.open(k, "rb") as f:
                pq.ParquetFile(f).read()  # a half object would not parse
    if killed:
        assert not fs.exists(f"{bucket}/pool/decontamination_report.parquet")
    ok(*decon)
    ok("stage", "--pool", local, "--signals", "phash")
    ok("decontaminate", "--pool", local, "--eval-dir", evals, "--max-distance", "4")
    assert_same(local_files(local), s3_files(fs, f"{bucket}/pool"))
    assert no_temporaries(fs, bucket) == []


def test_killed_clip_stage_on_s3_leaves_only_whole_objects_and_resumes(tmp_path, s3, checkpoint):
    """SIGKILL `curate stage --signals clip` on an s3 pool once its first clip column object exists: every object
    under a final key is a whole parquet file, and the rerun ends with the bytes of a local stage."""
    from curate.atomic import is_temporary
    from curate.storage import remove_stale_objects
    from tests.curate.helpers import write_shard_pool
    from tests.faults.killing import kill_after

    fs, bucket = s3
    local = tmp_path / "pool"
    write_shard_pool(local, [3] * 6, seed=5)
    fs.put(str(local), f"{bucket}/pool", recursive=True)
    remote = f"s3://{bucket}/pool"
    stage = ["stage", "--signals", "clip", *model_args(checkpoint), "--processes", "1", "--batch-size", "2"]
    cmd = [sys.executable, "-m", "curate.cli", *stage, "--pool", remote, "--no-progress"]
    killed = kill_after(cmd, 0.0, ready=lambda: bool(fs.glob(f"{bucket}/pool/columns/clip_tiny/0*.parquet")))
    for k in fs.find(f"{bucket}/pool/columns"):
        if k.endswith(".parquet") and not is_temporary(k):
            with fs.open(k, "rb") as f:
                assert pq.ParquetFile(f).read().num_rows == 3  # whole, or not there
    out = ok(*stage, "--pool", remote)
    if killed:
        assert "already done" in out and "(0 already done)" not in out, out
    ok(*stage, "--pool", local)
    # a kill between a temporary key's upload and its copy leaves that temporary; a rerun removes it once it is
    # older than a writer could still be copying it (here: at once)
    for folder in (f"{remote}/columns/clip_tiny", f"{remote}/columns/stage_reads"):
        remove_stale_objects(folder, older_than_s=0)
    assert_same(local_files(local), s3_files(fs, f"{bucket}/pool"))


def test_stage_clip_loader_path_on_s3_equals_local(tmp_path, s3, checkpoint):
    """The loader path (the default on a GPU: the model in this process, forked DataLoader workers reading the
    shards from S3), run here on the CPU with --loader-workers 2: the same bytes as on a local copy."""
    from tests.curate.helpers import write_shard_pool

    fs, bucket = s3
    local = tmp_path / "pool"
    write_shard_pool(local, [4, 3, 3], seed=9)
    fs.put(str(local), f"{bucket}/pool", recursive=True)
    outs = {}
    for pool in (str(local), f"s3://{bucket}/pool"):
        outs[pool] = ok("stage", "--pool", pool, "--signals", "clip,phash", *model_args(checkpoint), "--loader-workers", "2")
        assert "10 samples in 3 shards (0 already done)" in outs[pool] and "(fp32, loader)" in outs[pool], outs[pool]
    assert_same(local_files(local), s3_files(fs, f"{bucket}/pool"))
    assert json.loads(fs.cat_file(f"{bucket}/pool/columns/stage_stats.json"))["engine"] == "loader"
    assert no_temporaries(fs, bucket) == []
