"""Kill a command with SIGKILL at a chosen moment, rerun it, and compare what it left with an unbroken run.

Outputs are compared by content, canonically: a tar by its members' names and bytes (not by mtimes or
member order, which img2dataset's threads decide), a parquet file by its rows sorted, a JSON file (and each
line of a JSON-lines file) without its timing fields, a torch checkpoint by the tensors and values it holds.
Everything else byte for byte. The absolute path of the folder compared is read as `<root>` wherever a file
records it (stats name their pool and subset file; the killed runs live in other folders than the unbroken
one). Temporary files count as output: a finished command leaves none.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pyarrow.parquet as pq

# Wall-clock measurements, which no two runs share: the download's and stage's durations and rates, the
# trainer's per-step throughput and data wait.
TIMING_KEYS = {"start_time", "end_time", "duration", "wall_s", "seconds", "elapsed_s", "images_per_second",
               "samples_per_s", "samples_per_s_per_gpu", "step_time_s", "data_wait"}
ROOT = "<root>"


def _plain(obj, root: str):
    """JSON-like data with timing fields dropped, `root` read as <root> in strings, tensors as plain bytes."""
    if isinstance(obj, dict):
        return {k: _plain(v, root) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, ROOT) if root else obj
    if type(obj).__module__ == "torch" and hasattr(obj, "numpy"):  # a tensor: dtype, shape and its bytes' digest
        import torch

        t = obj.detach().cpu().contiguous().view(-1)
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return ("tensor", str(t.dtype), tuple(obj.shape), hashlib.sha256(data).hexdigest())
    return obj


def canonical(path: Path, root: Path | None = None):
    """What a file holds, in a form two runs that did the same work agree on."""
    name = path.name
    r = str(root) if root else ""
    if name.endswith(".tar"):
        try:
            with tarfile.open(path) as tar:
                return sorted((m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile())
        except tarfile.ReadError:  # a corrupt tar (an input, or half an output): its bytes
            return ("unreadable tar", path.read_bytes())
    if name.endswith(".parquet"):
        rows = _plain(pq.read_table(path).to_pylist(), r)
        return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str))
    if name.endswith(".json"):
        return _plain(json.loads(path.read_text()), r)
    if name.endswith(".jsonl"):
        return [_plain(json.loads(line), r) for line in path.read_text().splitlines()]
    if name.endswith(".pt"):
        from train.checkpoint import load  # tensors only: no pickled code runs

        return _plain(load(path), r)
    if name == "training.png":  # the trainer's plot shows samples/s, a timing: compare its size, not its pixels
        from PIL import Image

        with Image.open(path) as img:
            return ("training plot", img.size)
    data = path.read_bytes()
    return data.replace(r.encode(), ROOT.encode()) if r else data


def snapshot(folder: Path, ignore: Callable[[Path], bool] = lambda p: False, relative_paths: bool = False) -> dict:
    """{relative name: canonical content} of every file under `folder`; with relative_paths, `folder`'s own
    absolute path reads as <root> inside the files."""
    folder = Path(folder)
    root = folder if relative_paths else None
    return {str(p.relative_to(folder)): canonical(p, root) for p in sorted(folder.rglob("*"))
            if p.is_file() and not ignore(p.relative_to(folder))}


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> float:
    """Run to the end (it must succeed); returns the wall time."""
    return timed_run(cmd, cwd=cwd, timeout=timeout, env=env)[0]


def _popen(cmd, cwd, env, out):
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                            env={**os.environ, **(env or {})})


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used (with its children it waited for); None once it is gone."""
    try:
        t = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    return t.user + t.system + t.children_user + t.children_system


def timed_run(cmd: list[str], ready: Callable[[], bool] | None = None, finished: Callable[[], bool] | None = None,
              cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> tuple[float, float, float]:
    """Run to the end (it must succeed); returns (wall time, seconds of work, CPU seconds).

    The work is timed from when `ready()` first holds (the command has begun its real work, e.g. its first
    output file exists) to when `finished()` first holds (its last output exists), so that a kill drawn in it
    lands in the work, not in the interpreter's imports or its exit. Without them, from the start, to the end.
    The CPU seconds are those of the command and every process it waited for, however busy the machine was.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    began = None if ready else start
    ended = None
    with tempfile.TemporaryFile() as out:
        proc = _popen(cmd, cwd, env, out)
        try:
            while proc.poll() is None:
                if began is None and ready():
                    began = time.monotonic()
                if began is not None and ended is None and finished and finished():
                    ended = time.monotonic()
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"{' '.join(map(str, cmd))}: still running after {timeout} s")
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        end = time.monotonic()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        log = out.read().decode(errors="replace")
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\nexit {proc.returncode}\n{log[-5000:]}"
    assert began is not None, f"{' '.join(map(str, cmd))}: ended before it was ever ready\n{log[-2000:]}"
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return end - start, (ended or end) - began, cpu


def kill_after(cmd: list[str], seconds: float, cwd: Path | None = None, ready: Callable[[], bool] | None = None,
               env: dict | None = None, timeout: float = 600, cpu: float | None = None) -> bool:
    """Start cmd and SIGKILL its whole process group `seconds` after `ready()` first holds, or after the command
    has used `cpu` CPU seconds (after the start without either); True when it was still running then."""
    start = time.monotonic()
    proc = _popen(cmd, cwd, env, subprocess.DEVNULL)
    if cpu is not None:
        ready = lambda: (cpu_seconds(proc.pid) or 0.0) >= cpu
    try:
        if ready:
            while proc.poll() is None and not ready():
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"{' '.join(map(str, cmd))}: never ready in {timeout} s")
                time.sleep(0.005)
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
