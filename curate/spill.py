"""Sorted runs of kept uids spilled to storage, so the `curate run` driver merges them without holding them.

Each partition task writes its sorted kept uids (a `u8,u8` .npy file: a run) into one folder inside the run's
output, `OUT/.subset-runs.<token>.tmp/`: inside the output, so a worker on another machine writes where the
driver reads (a shared folder, or an object store through curate.storage). The driver reads each run back a
chunk at a time (`FileRun`: plain reads of a local file, ranged GETs of an object) for
`curate.subset.write_subset_runs`, so its memory is set by the number of runs, not by the rows kept.

The folder lives only while its run does: removed when the run ends, whether it finished or failed. A run
killed outright (SIGKILL) cannot remove it, so the next run removes such leftovers (`remove_stale_spills`):
a local folder's `.lock` is held (flock) by its live driver, so a folder whose lock is free is a leftover;
an object store has no locks, so a prefix whose newest object is older than `STALE_S` is.

A task still running when its run fails (Dask and a process pool cannot stop a started task) may write its
run after the driver removed the folder. On an object store that write would put the prefix back, so the
folder has a marker (`.lock` locally, `.live` on a store): the driver deletes the marker before the rest, and
`write_run` looks for it after writing and takes its own run back when it is gone. On a store that reads its
own writes (S3 does), either the driver's removal lists the late run or the late task sees the marker gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import secrets
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from curate import storage
from curate.atomic import atomic_path
from curate.subset import SubsetFileError, read_header, write_merged
from curate.uids import UID_DTYPE

PREFIX = ".subset-runs."
SUFFIX = ".tmp"
LOCK = ".lock"
LIVE = ".live"  # an object-store spill folder's marker, there while its run lives
STALE_S = 600.0  # an object-store spill prefix untouched this long belongs to no live run
HEADER_BYTES = 4096  # more than any header np.save writes for a 1-D `u8,u8` array


def is_spill_folder(name: str) -> bool:
    name = str(name).rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(PREFIX) and name.endswith(SUFFIX)


@contextlib.contextmanager
def spill_folder(output) -> Iterator[str]:
    """A new spill folder inside `output` (a folder or an object-store URL), removed when the block ends."""
    folder = storage.path(output) / f"{PREFIX}{secrets.token_hex(4)}{SUFFIX}"
    lock = None
    try:
        if not storage.is_url(folder):
            folder.mkdir(parents=True)
            lock = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            folder.fs.pipe_file((folder / LIVE).path, b"")
        yield str(folder)
    finally:
        try:
            _remove(folder)
        finally:
            if lock is not None:
                os.close(lock)


def _remove(folder) -> None:
    """Remove the spill folder. A task still running after another failed may put a run's temporary file in it
    while rmtree empties it, which leaves the folder behind; write_run never makes the folder again, so a few
    more tries remove it for good (seen once in CI: a failing partition's run left `.subset-runs.*.tmp`).
    The marker goes first, so a late `write_run` that still finds it wrote before this removal lists."""
    marker = _marker(folder)
    if storage.is_url(marker):
        if marker.fs.exists(marker.path):
            marker.fs.rm_file(marker.path)
    else:
        marker.unlink(missing_ok=True)
    for _ in range(20):
        storage.remove_tree(folder)
        if storage.is_url(folder) or not folder.exists():
            return
        time.sleep(0.05)


def write_run(folder: str, index: int, pairs: np.ndarray) -> dict:
    """Spill one task's sorted run as `folder/<index>.npy`, whole or not at all; {"path", "rows"} for the
    driver (no file for an empty run). The folder is never made here: once its run has removed it (a task
    still running after another failed), the write fails, or (an object store has no folders to miss) the
    run is taken back and SpillGone raised, instead of leaving anything behind."""
    if not len(pairs):
        return {"path": None, "rows": 0}
    path = f"{folder}/{index:06d}.npy"
    with atomic_path(path, parents=False) as tmp:
        with open(tmp, "wb") as f:  # no fsync: a run lives only as long as the command
            np.save(f, np.ascontiguousarray(pairs, dtype=UID_DTYPE), allow_pickle=False)
    marker = _marker(folder)
    if not marker.exists():  # the run ended while this task wrote: take the late run back
        if storage.is_url(path):
            storage.remove_tree(path)
        else:
            Path(path).unlink(missing_ok=True)
        raise SpillGone(f"{folder}: the run this task belongs to has ended; its spilled uids were removed")
    return {"path": path, "rows": int(len(pairs))}


class SpillGone(RuntimeError):
    """A task wrote its run after its `curate run` had ended (failed) and removed the spill folder."""


def _marker(folder):
    folder = storage.path(folder)
    return folder / (LIVE if storage.is_url(folder) else LOCK)


def _read_range(path: str, start: int, stop: int) -> bytes:
    if storage.is_url(path):
        up = storage.path(path)
        return up.fs.cat_file(up.path, start=start, end=stop)
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(stop - start)


class FileRun:
    """A spilled run, read `rows` [start, stop) at a time: a local file with plain reads (no memory map, whose
    pages would stay in the driver's resident set), an object with one ranged GET per chunk."""

    def __init__(self, path: str, rows: int):
        self.path, self.rows = path, rows
        self._data_at: int | None = None

    def _check_header(self) -> int:
        """Where the rows begin; the header must say `u8,u8` and the row count the task reported."""
        head = io.BytesIO(_read_range(self.path, 0, HEADER_BYTES))
        shape, dtype = read_header(self.path, head)
        if dtype != UID_DTYPE or shape != (self.rows,):
            raise SubsetFileError(f"{self.path}: a spilled run should hold {self.rows} rows of {UID_DTYPE}, "
                                  f"its header says {shape} of {dtype}")
        return head.tell()

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._data_at is None:
            self._data_at = self._check_header()
        size = UID_DTYPE.itemsize
        at = self._data_at + start * size
        if storage.is_url(self.path):
            data = _read_range(self.path, at, at + (stop - start) * size)
            rows = np.frombuffer(data, dtype=UID_DTYPE, count=len(data) // size)
        else:
            rows = np.fromfile(self.path, dtype=UID_DTYPE, count=stop - start, offset=at)
        if len(rows) != stop - start:
            raise SubsetFileError(f"{self.path}: a spilled run ends at row {start + len(rows)}, before row {stop} (truncated)")
        return rows


#: runs merged at once: more are first merged a group at a time into runs of their own (in the spill folder),
#: so each run's read buffer stays >= MERGE_BUFFER_BYTES / (16 x MAX_FAN_IN) = 2,048 rows however many there are
MAX_FAN_IN = 256


def fewer_runs(runs: list, folder: str, fan_in: int = MAX_FAN_IN) -> list:
    """At most `fan_in` runs with the same distinct rows as `runs`: while there are more, each group of
    `fan_in` is merged into one new spilled run (an external merge sort's extra pass: the kept uids are
    written and read once more, the driver's memory stays that of one merge)."""
    level = 0
    while len(runs) > fan_in:
        merged = []
        for g in range(0, len(runs), fan_in):
            path = f"{folder}/merged-{level}-{g // fan_in:06d}.npy"
            with atomic_path(path, parents=False) as tmp:
                with open(tmp, "w+b") as f:
                    rows = write_merged(f, runs[g : g + fan_in])
            merged.append(FileRun(path, rows))
        runs, level = merged, level + 1
    return runs


def file_runs(results: list[dict]) -> list[FileRun]:
    """The runs that `write_run` results name (empty runs have no file)."""
    return [FileRun(r["path"], r["rows"]) for r in results if r["rows"]]


def remove_stale_spills(output) -> list[str]:
    """Remove spill folders in `output` that no live run holds (see the module docstring); return their names."""
    out = storage.path(output)
    if not out.is_dir():
        return []
    removed = []
    if storage.is_url(out):
        fs, now = out.fs, time.time()
        for info in fs.ls(out.path, detail=True):
            if info.get("type") != "directory" or not is_spill_folder(info["name"]):
                continue
            times = [v.timestamp() for v in (o.get("LastModified") for o in fs.find(info["name"], detail=True).values())
                     if hasattr(v, "timestamp")]
            if not times or now - max(times) >= STALE_S:
                fs.rm(info["name"], recursive=True)
                removed.append(f"{out.protocol}://{info['name']}")
        return removed
    for folder in sorted(out.iterdir()):
        if is_spill_folder(folder.name) and folder.is_dir() and _unlocked(folder):
            storage.remove_tree(folder)
            removed.append(str(folder))
    return removed


def _unlocked(folder: Path) -> bool:
    """True when no live driver holds `folder`'s lock (a folder without one is a leftover once a minute old:
    its driver was killed between making the folder and locking it)."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return time.time() - folder.stat().st_mtime > 60
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
