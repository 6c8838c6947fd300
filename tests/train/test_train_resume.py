"""SIGKILL a training process after its first checkpoint; `--resume latest` ends where an unbroken run ends."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import torch

from train import checkpoint, cli
from train.logs import read_log

STEPS, BATCH, EVERY = 40, 8, 4  # 36 steps after the first checkpoint for the kill to land in


def _args(shards, run, *extra):
    return ["--scale", "tiny", "--data", str(shards), "--output", str(run), "--samples", str(STEPS * BATCH - 3),
            "--batch-size", str(BATCH), "--checkpoint-every", str(EVERY), "--workers", "2", "--seed", "3",
            "--no-progress", *extra]


@contextlib.contextmanager
def one_thread():
    """The killed subprocess runs with OMP_NUM_THREADS=1; the same here gives bit-identical arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_kill_and_resume_matches_an_unbroken_run(shards, tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    victim = subprocess.Popen([sys.executable, "-m", "train.cli", *_args(shards, broken)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    # Killed as soon as its first checkpoint appears (the unbroken run only after: run side by side, a fast
    # machine finished the victim before the kill came).
    first = checkpoint.step_path(broken, EVERY)
    deadline = time.time() + 120
    while not first.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(victim.pid, signal.SIGKILL)  # the trainer and its data workers, mid-run
    assert victim.wait() == -signal.SIGKILL, victim.stderr.read().decode()
    assert first.exists() and not checkpoint.final_path(broken).exists(), "the run was not interrupted mid-way"
    killed_at = checkpoint.load(checkpoint.latest(broken))["step"]
    assert EVERY <= killed_at < STEPS

    with one_thread():  # the unbroken run
        assert cli.main(_args(shards, whole)) == 0

    with one_thread():
        assert cli.main(_args(shards, broken, "--resume", "latest")) == 0

    a, b = checkpoint.load(checkpoint.final_path(whole)), checkpoint.load(checkpoint.final_path(broken))
    assert a["step"] == b["step"] == STEPS
    assert a["samples_seen"] == b["samples_seen"] == STEPS * BATCH - 3
    for name, value in a["state_dict"].items():  # same data, same order, same augmentation: same weights
        assert torch.equal(value, b["state_dict"][name]), name

    log_a = [r for r in read_log(whole) if "loss" in r]
    log_b = [r for r in read_log(broken) if "loss" in r]
    assert [r["step"] for r in log_b] == list(range(1, STEPS + 1))  # no step twice, none missing
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]


def test_resume_takes_the_checkpoints_worker_count_when_none_is_given(shards, tmp_path):
    """The data position belongs to the checkpoint's loader workers: without --workers a resume reuses them;
    another number is a clear error, since the stream could not continue exactly."""
    from train.logs import read_info

    run = tmp_path / "run"
    base = ["--scale", "tiny", "--data", str(shards), "--output", str(run), "--samples", "24", "--batch-size", "8",
            "--checkpoint-every", "1", "--no-progress"]
    assert cli.main([*base, "--workers", "1"]) == 0
    first = checkpoint.step_path(run, 1)
    before = (run / "log.jsonl").read_text(), (run / "info.json").read_text()
    assert cli.main([*base, "--resume", str(first), "--workers", "2"]) == 2  # DataError: exit 2
    assert ((run / "log.jsonl").read_text(), (run / "info.json").read_text()) == before  # nothing written
    assert cli.main([*base, "--resume", str(first)]) == 0
    info = read_info(run)
    assert info["workers"] == 1 and info["resumed_from"] == str(first) and info["steps_done"] == 3
    assert [r["event"] for r in read_log(run) if "event" in r].count("resume") == 1


def test_default_workers_follow_the_cpus_of_each_gpu(monkeypatch):
    from train.distributed import World
    from train.loop import default_log_every, default_workers

    assert (default_log_every(torch.device("cpu")), default_log_every(torch.device("cuda", 0))) == (1, 10)

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert default_workers(cpu, World()) == 4
    assert default_workers(cuda, World()) == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun: 8 GPUs share the host's CPUs
    assert default_workers(cuda, World(world_size=16)) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(256)))
    assert default_workers(cuda, World(world_size=16)) == 16  # 256 // 8 - 1 = 31, capped
