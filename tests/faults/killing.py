"""Kill a command with SIGKILL at a chosen moment, rerun it, and compare what it left with an unbroken run.

Outputs are compared by content, canonically: a tar by its members' names and bytes (not by mtimes or
member order, which img2dataset's threads decide), a parquet file by its rows sorted, a JSON file without its
timing fields. Everything else byte for byte. Temporary files count as output: a finished command leaves none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

TIMING_KEYS = {"start_time", "end_time", "duration", "wall_s", "seconds", "elapsed_s"}


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def canonical(path: Path):
    """What a file holds, in a form two runs that did the same work agree on."""
    name = path.name
    if name.endswith(".tar"):
        with tarfile.open(path) as tar:
            return sorted((m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile())
    if name.endswith(".parquet"):
        rows = pq.read_table(path).to_pylist()
        return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    if name.endswith(".json"):
        return _strip_timing(json.loads(path.read_text()))
    return path.read_bytes()


def snapshot(folder: Path, ignore: Callable[[Path], bool] = lambda p: False) -> dict:
    return {str(p.relative_to(folder)): canonical(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not ignore(p.relative_to(folder))}


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> float:
    """Run to the end (it must succeed); returns the wall time."""
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return time.monotonic() - start


def kill_after(cmd: list[str], seconds: float, cwd: Path | None = None) -> bool:
    """Start cmd and SIGKILL its whole process group after `seconds`; True when it was still running then."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
