"""Every long command killed with SIGKILL at random moments (several seeds), then rerun: what it leaves is what
an unbroken run leaves, file for file (issue 16: the fault-injection suite).

One harness for every command (`killed_anywhere`): an unbroken run first, then for each seed a kill of the
command's whole process group at a point drawn in that seed's third of its work (early, middle, late): after
k of the files the unbroken run wrote, and a random part of one file's time, for a command that writes as it
goes; after a part of the CPU time the unbroken run used, for one that writes only at its end. The same command is then run again
to the end, and everything under the run's folder (inputs included: a command must not touch them) is
compared with the unbroken run's, after `settle` drops what says how one invocation ran rather than what it
made. At least one kill per command must land mid-work.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.demo.metadata import random_uids
from curate.subset import write_subset
from curate.uids import uids_to_pairs
from tests.curate.helpers import add_member, jpeg_bytes, write_shard_pool
from tests.faults.hostile_server import HostileServer
from tests.faults.killing import kill_after, run, snapshot, timed_run

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2)
CURATE = [sys.executable, "-m", "curate.cli"]


def _differences(want, got, where: str = "", limit: int = 6) -> list[str]:
    """Where two canonical contents differ, briefly."""
    if type(want) is not type(got):
        return [f"{where or '.'}: {type(want).__name__} != {type(got).__name__}"]
    if isinstance(want, dict):
        out = [f"{where}/{k}: only in the {'unbroken' if k in want else 'rerun'} run" for k in sorted(set(want) ^ set(got), key=str)]
        for k in sorted(set(want) & set(got), key=str):
            if want[k] != got[k]:
                out += _differences(want[k], got[k], f"{where}/{k}", limit)
        return out[:limit]
    if isinstance(want, list):
        if len(want) != len(got):
            return [f"{where or '.'}: {len(want)} items, rerun {len(got)}"]
        out = []
        for i, (a, b) in enumerate(zip(want, got)):
            if a != b:
                out += _differences(a, b, f"{where}[{i}]", limit)
            if len(out) >= limit:
                break
        return out[:limit]
    a, b = repr(want), repr(got)
    return [f"{where or '.'}: {a[:200] + '...' * (len(a) > 200)} != {b[:200] + '...' * (len(b) > 200)}"]


def killed_anywhere(tmp_path: Path, name: str, prepare: Callable[[Path], None], cmd: Callable[[Path], list[str]],
                    progress: Callable[[Path], int] | None = None, finished: Callable[[Path], bool] | None = None,
                    settle: Callable[[dict], dict] = lambda files: files, ignore: Callable[[Path], bool] = lambda p: False,
                    env: dict | None = None) -> list[str]:
    """Run `cmd(root)` unbroken, then once per seed kill it at a random point of its work and rerun it; every
    file under each root must match (after `settle`, which drops what legitimately tells the runs apart).

    prepare(root) writes the command's inputs into a fresh folder. progress(root) counts the files it has
    written so far: seed i waits for k of the N the unbroken run left, k drawn in the i-th third of
    [0.2, 0.95] x N (early, middle, late), then a random part of one file's time, and kills there; counting
    files rather than seconds keeps the kill inside the work however busy the machine is. Without it (a
    command that writes everything at its end) it is killed after the i-th third of [0.2, 0.95] of the CPU
    time the unbroken run used. finished(root) says it wrote its last output (a kill after that landed in its
    exit, not its work); ignore(relative path) leaves out inputs too big to be worth reading back.
    Returns a line per kill, for the failure messages.
    """
    unbroken = tmp_path / "unbroken"
    prepare(unbroken)
    wall, work, cpu = timed_run(cmd(unbroken), ready=progress and (lambda: progress(unbroken) > 0),
                           finished=finished and (lambda: finished(unbroken)), env=env)
    total = progress(unbroken) if progress else 0
    want = settle(snapshot(unbroken, ignore, relative_paths=True))
    kills, mid_work = [], 0
    for i, seed in enumerate(SEEDS):
        root = tmp_path / f"killed{seed}"
        prepare(root)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        lo = 0.2 + 0.75 * i / len(SEEDS)
        fraction = rng.uniform(lo, lo + 0.75 / len(SEEDS))
        if progress:
            k = min(max(1, int(fraction * total)), total - 1)
            delay = rng.uniform(0, 1) * work / total
            where = f"{delay:.3f} s after its file {k} of {total} ({work:.2f} s of work, {wall:.2f} s wall)"
            running = kill_after(cmd(root), delay, ready=lambda root=root, k=k: progress(root) >= k, env=env)
        else:  # by the CPU time it has used, which a busy machine does not stretch as it does the wall time
            where = f"after {fraction * cpu:.2f} of its {cpu:.2f} CPU seconds ({wall:.2f} s wall)"
            running = kill_after(cmd(root), 0, cpu=fraction * cpu, env=env)
        unfinished = running and not (finished and finished(root))
        mid_work += unfinished
        kills.append(f"seed {seed}: killed {where}: "
                     + ("mid-work" if unfinished else "still running, work done" if running else "too late, it had ended"))
        run(cmd(root), env=env)
        got = settle(snapshot(root, ignore, relative_paths=True))
        diff = _differences(want, got)
        assert not diff, f"{name}, {kills[-1]}; after the rerun:\n  " + "\n  ".join(diff)
        shutil.rmtree(root)  # the same as the unbroken run's: no need to keep it
    assert mid_work, f"{name}: no kill landed mid-work:\n  " + "\n  ".join(kills)
    print(f"{name}:\n  " + "\n  ".join(kills))
    return kills


def _exists(*patterns: str) -> Callable[[Path], bool]:
    """Whether a file matching any of the patterns (relative to the run's folder) exists."""
    return lambda root: any(next(root.glob(p), None) for p in patterns)


def _files(folder: str, pattern: str = "*") -> Callable[[Path], int]:
    """How many files under root/folder match pattern (recursively with '**/')."""
    return lambda root: sum(1 for p in (root / folder).glob(pattern) if p.is_file()) if (root / folder).is_dir() else 0


# ---- curate download --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_web(tmp_path_factory):
    """120 rows: mostly images served after 50 ms each, some dead links, corrupt files and refused schemes."""
    root = tmp_path_factory.mktemp("kill_web")
    web = root / "web"
    web.mkdir()
    uids = random_uids(np.random.default_rng(11), 120)
    with HostileServer(web, root / "requests.log") as server:
        urls = []
        for i, uid in enumerate(uids):
            kind = i % 10
            if kind == 7:
                urls.append(f"{server.base}/slow/missing-{i}.jpg")
            elif kind == 8:
                (web / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg" * 5)
                urls.append(f"{server.base}/slow/{i}.jpg")
            elif kind == 9:
                urls.append(f"ftp://127.0.0.1/{i}.jpg")
            else:
                (web / f"{i}.jpg").write_bytes(jpeg_bytes(i, (48 + i % 17, 40)))
                urls.append(f"{server.base}/slow/{i}.jpg")
        pq.write_table(pa.table({"uid": uids, "url": urls, "text": [f"caption {i}" for i in range(120)]}),
                       root / "urls.parquet")
        yield root


def download_cmd(root, pool):
    return [*CURATE, "download", "--url-list", str(root / "urls.parquet"), "--pool", str(pool),
            "--shard-size", "10", "--threads", "2", "--processes", "2", "--image-size", "32", "--allow-private"]


def test_download_killed_anywhere_resumes_to_the_same_pool(slow_web, tmp_path):
    killed_anywhere(tmp_path, "download", prepare=lambda root: None, cmd=lambda root: download_cmd(slow_web, root / "pool"),
                    progress=_files("pool/shards"), finished=_exists("pool/download_stats.json"))


# ---- curate stage (the shard pool also serves run and reshard) ----------------------------------------


@pytest.fixture(scope="module")
def shard_pool(tmp_path_factory):
    """16 img2dataset-like shards of 30 images (and a failed download each), with DataComp metadata; shard 3
    is cut short (a read error), shard 9 holds a sample whose json has no uid."""
    root = tmp_path_factory.mktemp("kill_pool") / "pool"
    write_shard_pool(root, [30] * 16, seed=4, failed_per_shard=1)
    tar = root / "shards" / "00000003.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with tarfile.open(root / "shards" / "00000009.tar", "a") as t:
        add_member(t, "nouid.jpg", jpeg_bytes(999))
        add_member(t, "nouid.txt", b"a sample without a uid")
        add_member(t, "nouid.json", b"{}")
    return root


# What stage_stats.json says about one invocation rather than about the pool: how many shards it computed and
# skipped, the samples it read ("read by this run"), and how it ran its model (device, precision, loader
# workers, engine: null or the plain engine when it had no model to run). A rerun after a kill skips the
# shards done before it, so these differ from an unbroken run by design; what the pool holds must not.
STAGE_INVOCATION = ("shards_computed", "shards_skipped", "samples", "device", "precision", "loader_workers", "engine")


def _settle_stage(files: dict) -> dict:
    stats = files.get("pool/columns/stage_stats.json")
    if stats:
        assert stats["shards_computed"] + stats["shards_skipped"] == stats["shards"]
        for key in STAGE_INVOCATION:
            stats.pop(key)
    return files


def test_stage_phash_sha256_killed_anywhere(shard_pool, tmp_path):
    killed_anywhere(
        tmp_path, "stage phash,sha256", prepare=lambda root: shutil.copytree(shard_pool, root / "pool"),
        cmd=lambda root: [*CURATE, "stage", "--pool", str(root / "pool"), "--signals", "phash,sha256", "--processes", "2",
                          "--no-progress"],
        progress=_files("pool/columns/sha256"), finished=_exists("pool/columns/stage_stats.json"), settle=_settle_stage)


def test_stage_stats_keep_read_errors_after_a_kill(tmp_path):
    """A truncated shard and a uid-less sample, both in shards the killed run finished: the rerun's stats must
    still name them, as per_signal already counts every shard's files whichever run wrote them."""
    pool = tmp_path / "pool"
    write_shard_pool(pool, [30] * 8, seed=5, failed_per_shard=0)
    tar = pool / "shards" / "00000000.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with tarfile.open(pool / "shards" / "00000001.tar", "a") as t:
        add_member(t, "nouid.jpg", jpeg_bytes(999))
        add_member(t, "nouid.json", b"{}")
    cmd = [*CURATE, "stage", "--pool", str(pool), "--signals", "phash", "--processes", "1", "--no-progress"]
    kill_after(cmd, 0, ready=lambda: (pool / "columns" / "phash" / "00000001.parquet").exists())
    run(cmd)
    stats = json.loads((pool / "columns" / "stage_stats.json").read_text())
    assert list(stats["read_errors"]) == ["00000000.tar"]
    assert stats["samples_without_uid"] == 1


TINY = "datacomp-tiny"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A datacomp-tiny open_clip checkpoint with random weights, made here (nothing is downloaded)."""
    from tests.curate.helpers import tiny_clip_checkpoint

    return tiny_clip_checkpoint(tmp_path_factory.mktemp("kill_clip") / "tiny.pt")


def test_stage_clip_killed_anywhere(tiny_clip, tmp_path_factory, tmp_path):
    pristine = tmp_path_factory.mktemp("clip_pool") / "pool"
    write_shard_pool(pristine, [16] * 16, seed=6, failed_per_shard=0)
    killed_anywhere(
        tmp_path, "stage phash,clip", prepare=lambda root: shutil.copytree(pristine, root / "pool"),
        cmd=lambda root: [*CURATE, "stage", "--pool", str(root / "pool"), "--signals", "phash,clip", "--model", TINY,
                          "--pretrained", str(tiny_clip), "--clip-tag", "tiny", "--device", "cpu", "--batch-size", "8",
                          "--processes", "1", "--torch-threads", "1", "--no-progress"],
        progress=_files("pool/columns/clip_tiny"), finished=_exists("pool/columns/stage_stats.json"), settle=_settle_stage,
        env={"OMP_NUM_THREADS": "1"})


# ---- curate dedup -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hashed_pool(tmp_path_factory):
    """A pool's pHash columns alone: 200,000 rows in 16 files, a fifth of them near copies (up to 3 bits off) of
    another row, and a few without a hash."""
    root = tmp_path_factory.mktemp("kill_dedup") / "pool"
    folder = root / "columns" / "phash"
    folder.mkdir(parents=True)
    n = 200_000
    rng = np.random.default_rng(3)
    h = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    flips = np.zeros(n, np.uint64)
    for _ in range(3):
        flips ^= (np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)) * (rng.random(n) < 0.7).astype(np.uint64)
    h = np.where(rng.random(n) < 0.2, h[rng.integers(0, n, n)] ^ flips, h)
    hexes = [f"{int(v):016x}" for v in h]
    missing = rng.random(n) < 0.001
    for f, part in enumerate(np.array_split(np.arange(n), 16)):
        pq.write_table(pa.table({"uid": [f"{i:032x}" for i in part],
                                 "phash": [None if missing[i] else hexes[i] for i in part],
                                 "status": ["truncated" if missing[i] else "ok" for i in part]}), folder / f"{f:08d}.parquet")
    return root


def test_dedup_phash_killed_anywhere(hashed_pool, tmp_path):
    # dedup writes all its files at the end (staged, then swapped in): its kills go by the CPU time it has used
    killed_anywhere(
        tmp_path, "dedup phash", prepare=lambda root: shutil.copytree(hashed_pool, root / "pool"),
        cmd=lambda root: [*CURATE, "dedup", "--pool", str(root / "pool"), "--method", "phash", "--max-distance", "8"],
        finished=_exists("pool/columns/dedup_phash_stats.json"),
        ignore=lambda path: path.parts[:3] == ("pool", "columns", "phash"))  # its input, 200,000 rows


# ---- curate run and curate reshard ------------------------------------------------------------------------


def _settle_run(files: dict) -> dict:
    """timings.json holds only the durations of the run's phases: its names are compared, not its values."""
    if "out/timings.json" in files:
        files["out/timings.json"] = sorted(files["out/timings.json"])
    return files


def test_run_basic_and_its_reshard_killed_anywhere(shard_pool, tmp_path):
    killed_anywhere(
        tmp_path, "run --filter basic", prepare=lambda root: shutil.copytree(shard_pool, root / "pool"),
        cmd=lambda root: [*CURATE, "run", "--pool", str(root / "pool"), "--filter", "basic", "--output", str(root / "out"),
                          "--shard-size", "2", "--processes", "1"],
        # OUT's files: the subset, stats and report, then the reshard's temporaries and shards
        progress=_files("out", "**/*"), finished=_exists("out/shards/reshard_stats.json"),
        settle=_settle_run)


def test_reshard_killed_anywhere(shard_pool, tmp_path):
    uids = pq.read_table(shard_pool / "metadata" / "00000000.parquet").column("uid").to_pylist()
    subset = write_subset(tmp_path / "subset.npy", uids_to_pairs(uids[::2] + uids[::5]))  # some uids twice

    def prepare(root):
        root.mkdir()

    killed_anywhere(
        tmp_path, "reshard", prepare=prepare,
        cmd=lambda root: [*CURATE, "reshard", "--pool", str(shard_pool), "--subset", str(subset), "--output", str(root / "out"),
                          "--shard-size", "2", "--processes", "2"],
        progress=_files("out", "**/*"), finished=_exists("out/reshard_stats.json"))


# ---- train --------------------------------------------------------------------------------------------


def _settle_train(files: dict) -> dict:
    """A resumed run records that it was resumed: info.json's `resumed_from` and a `resume` event in log.jsonl
    (the log is cut back to the checkpoint's step first, so every step is logged once). The weights, optimiser,
    RNG and data position in every checkpoint, and every other log record, must equal the unbroken run's."""
    info = files["run/info.json"]
    assert info.pop("resumed_from") in (None, *(f"<root>/run/{k[4:]}" for k in files if k.startswith("run/checkpoints/")))
    files["run/log.jsonl"] = [r for r in files["run/log.jsonl"] if r.get("event") != "resume"]
    return files


def test_train_tiny_killed_anywhere_resumes_to_the_same_run(tmp_path_factory, tmp_path):
    from tests.train.train_shards import write_shards

    shards = tmp_path_factory.mktemp("kill_train") / "shards"
    write_shards(shards, n_shards=3, per_shard=24)
    killed_anywhere(
        tmp_path, "train --scale tiny", prepare=lambda root: root.mkdir(),
        # --resume latest starts afresh where there is no checkpoint: one command for every run
        cmd=lambda root: [sys.executable, "-m", "train.cli", "--scale", "tiny", "--data", str(shards), "--output",
                          str(root / "run"), "--samples", str(24 * 8 - 3), "--batch-size", "8", "--checkpoint-every", "3",
                          "--workers", "2", "--seed", "3", "--no-progress", "--resume", "latest"],
        progress=_files("run/checkpoints", "step_*.pt"), finished=_exists("run/checkpoints/final.pt"),
        settle=_settle_train, env={"OMP_NUM_THREADS": "1"})


def test_a_finished_run_resumed_logs_one_end(tmp_path):
    """A kill between a run's last record and its exit, then `--resume latest`: the resumed run resumes from the
    last checkpoint and writes its own "end"; the earlier one goes with the records past the checkpoint."""
    from train.logs import StepLog, read_log

    first = StepLog(tmp_path, None)
    for record in ({"event": "start", "step": 0}, {"step": 1, "loss": 2.0}, {"event": "checkpoint", "step": 1},
                   {"event": "end", "steps": 1}):
        first.write(record)
    first.close()
    again = StepLog(tmp_path, resume_step=1)
    again.write({"event": "resume", "step": 1})
    again.write({"event": "end", "steps": 1})
    again.close()
    assert [r.get("event") for r in read_log(tmp_path)] == ["start", None, "checkpoint", "resume", "end"]
