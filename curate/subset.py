"""DataComp subset files: `np.save` of a sorted `u8,u8` array, one row per selected sample (repeats upsample).

Read back with checks, because a subset file may come from anyone: wrong dtype, unsorted rows or a
pickled object array get a clear error instead of a silent wrong selection.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from curate import storage
from curate.atomic import atomic_open
from curate.uids import UID_DTYPE


class SubsetFileError(ValueError):
    """A subset file that DataComp's resharder would not read as intended."""


def write_subset(path: str | os.PathLike, pairs: np.ndarray) -> Path:
    """Sort (unless already sorted) and save `pairs` (a `u8,u8` array) as a DataComp subset file, whole or not at all."""
    pairs = np.asarray(pairs)
    if pairs.dtype != UID_DTYPE:
        raise SubsetFileError(f"subset rows must have dtype {UID_DTYPE}, got {pairs.dtype}")
    if not is_sorted(pairs):
        pairs = sort_pairs(pairs)
    path = storage.path(path)
    with atomic_open(path, "wb") as f:
        np.save(f, pairs, allow_pickle=False)
    return path


class ArrayRun:
    """A sorted run held in memory (the form `write_subset_runs` reads runs in; curate.spill's FileRun reads a
    spilled one from storage a chunk at a time)."""

    def __init__(self, pairs: np.ndarray):
        self.pairs = np.asarray(pairs)
        if self.pairs.dtype != UID_DTYPE:
            raise SubsetFileError(f"subset rows must have dtype {UID_DTYPE}, got {self.pairs.dtype}")
        self.rows = len(self.pairs)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.pairs[start:stop]


#: what the merge's read buffers hold, over all runs (each run gets an equal share of rows); the merge's peak
#: is about 4.5x this (a batch as large as the buffers, and its sort)
MERGE_BUFFER_BYTES = 8 << 20
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 1024, 1 << 16


def chunk_rows(runs: int, buffer_bytes: int = MERGE_BUFFER_BYTES) -> int:
    """Rows each run reads at a time: the buffer shared out, within [MIN_CHUNK_ROWS, MAX_CHUNK_ROWS]."""
    share = buffer_bytes // (UID_DTYPE.itemsize * max(1, runs))
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, share)))


def merge_sorted_runs(runs: list, chunk: int) -> Iterator[np.ndarray]:
    """The distinct rows of sorted `runs` (ArrayRun, FileRun: `rows` and `read(start, stop)`), ascending, a
    batch at a time, reading each run `chunk` rows at a time: memory is about 2 x chunk rows per run, whatever
    the runs hold in all.

    Each step takes, from every run's buffer, the rows up to the smallest last row of the buffers whose run
    has more to read: no row still unread can sort before them. The run that set that bound is emptied, so
    every step moves on; buffers down to half a chunk are topped up. The batch (sorted pieces of a few runs)
    is sorted stably by the upper word, which merges such pieces quickly, and its repeats dropped."""
    runs = [r for r in runs if r.rows]
    bufs = [r.read(0, min(chunk, r.rows)) for r in runs]
    read_to = [len(b) for b in bufs]
    live = list(range(len(runs)))
    last = None  # the last row yielded, as a (upper, lower) tuple
    while live:
        pending = [i for i in live if read_to[i] < runs[i].rows]
        if pending:
            bound = np.array([min(bufs[i][-1].item() for i in pending)], dtype=UID_DTYPE)
            cuts = {i: int(np.searchsorted(bufs[i], bound, side="right")[0]) for i in live}
        else:
            cuts = {i: len(bufs[i]) for i in live}
        taken = [bufs[i][: cuts[i]] for i in live if cuts[i]]
        part = taken[0] if len(taken) == 1 else sort_pairs(np.concatenate(taken))
        for i in live:
            buf = bufs[i][cuts[i]:]
            if len(buf) <= chunk // 2 and read_to[i] < runs[i].rows:  # (an empty buffer always)
                more = runs[i].read(read_to[i], min(runs[i].rows, read_to[i] + chunk - len(buf)))
                read_to[i] += len(more)
                buf = np.concatenate([buf, more]) if len(buf) else more
            bufs[i] = buf
        live = [i for i in live if len(bufs[i])]
        new = np.ones(len(part), dtype=bool)
        new[1:] = (part["f0"][1:] != part["f0"][:-1]) | (part["f1"][1:] != part["f1"][:-1])
        if last is not None and len(part):
            new[0] = part[0].item() != last  # a uid repeated across steps: yielded rows never sort after it
        if not new.all():
            part = part[new]
        if len(part):
            last = part[-1].item()
            yield part


def write_subset_runs(path: str | os.PathLike, runs: list, buffer_bytes: int = MERGE_BUFFER_BYTES) -> tuple[Path, int, str]:
    """Save the distinct rows of sorted `runs` (`u8,u8` arrays, or ArrayRun/FileRun: each partition's kept uids)
    as one DataComp subset file, byte for byte what `write_subset(distinct rows)` writes; return (path, rows,
    the file's sha256).

    The runs are merged as they are read (`merge_sorted_runs`) and written as merged, so memory is about
    2 x `buffer_bytes` plus a batch, not the rows' size. The .npy header leaves room for any row count (numpy
    pads a 1-D header for it), so it is written first and rewritten with the final count; the sha256 is read
    back from the finished file in blocks."""
    runs = [r if hasattr(r, "read") else ArrayRun(r) for r in runs]
    path = storage.path(path)
    with atomic_open(path, "w+b") as f:
        rows = write_merged(f, runs, buffer_bytes)
        f.seek(0)
        digest = hashlib.sha256()
        while block := f.read(1 << 22):
            digest.update(block)
    return path, rows, digest.hexdigest()


def write_merged(f, runs: list, buffer_bytes: int = MERGE_BUFFER_BYTES) -> int:
    """Write the merged distinct rows of `runs` to the seekable file `f` as a 1-D `u8,u8` .npy; return the rows."""
    _write_header(f, sum(r.rows for r in runs))
    data_at = f.tell()
    rows = 0
    for part in merge_sorted_runs(runs, chunk_rows(len(runs), buffer_bytes)):
        f.write(np.ascontiguousarray(part).data)
        rows += len(part)
    f.seek(0)
    _write_header(f, rows)
    if f.tell() != data_at:
        raise RuntimeError(f"{getattr(f, 'name', 'subset')}: the .npy header changed length; the file would be corrupt")
    f.seek(0, os.SEEK_END)
    return rows


def _write_header(f, rows: int) -> None:
    """The header np.save writes for `rows` uid pairs (version 1.0; the same length for any row count)."""
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(UID_DTYPE), "fortran_order": False, "shape": (rows,)})


def read_subset(path: str | os.PathLike) -> np.ndarray:
    """Load and validate a subset file: dtype `u8,u8`, one dimension, sorted ascending.

    The header is checked against the file's size before any array is allocated: a header may claim
    any number of rows.
    """
    path = storage.path(path)
    if not path.is_file():
        raise SubsetFileError(f"{path}: subset file not found")
    with storage.open_file(path, "rb") as f:
        shape, dtype = read_header(path, f)
        if dtype != UID_DTYPE:
            raise SubsetFileError(
                f"{path}: dtype is {dtype}, DataComp subset files use {UID_DTYPE} "
                "(upper and lower 64 bits of each uid)"
            )
        if len(shape) != 1:
            raise SubsetFileError(f"{path}: expected a 1-D array, got shape {shape}")
        start = f.tell()
        data_bytes = f.seek(0, os.SEEK_END) - start
        f.seek(start)
        if data_bytes != shape[0] * dtype.itemsize:
            raise SubsetFileError(f"{path}: its header says {shape[0]} rows ({shape[0] * dtype.itemsize} bytes), "
                                  f"but the file holds {data_bytes} bytes of rows (truncated or corrupt)")
        arr = (np.fromfile(f, dtype=dtype, count=shape[0]) if not storage.is_url(path)  # (fromfile needs a real file)
               else np.frombuffer(bytearray(f.read(data_bytes)), dtype=dtype))
    if len(arr) > 1 and not is_sorted(arr):
        raise SubsetFileError(f"{path}: rows are not sorted; DataComp's resharder binary-searches them (sort with np.sort)")
    return arr


def read_header(path, f) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from an .npy header, refusing Fortran order and object dtypes (which need pickle)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = read(f)
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise SubsetFileError(f"{path}: not a readable .npy file ({e})") from e
    if fortran and len(shape) > 1:
        raise SubsetFileError(f"{path}: a Fortran-ordered array; DataComp subset files are 1-D")
    if dtype.hasobject:
        raise SubsetFileError(f"{path}: not a plain numpy array (dtype {dtype} needs pickle, which is refused)")
    return shape, dtype


def sort_pairs(pairs: np.ndarray) -> np.ndarray:
    """Sort uid pairs as np.sort would, fast: numpy sorts two-field structured arrays through a slow generic
    comparison (11 s for 3.8M uids). Sorted by the upper word alone (a stable sort, quick on a concatenation of
    sorted runs such as the partitions' results), then rows sharing an upper word (a repeated uid; rare
    otherwise) are ordered by the lower word among themselves."""
    if len(pairs) < 2:
        return pairs.copy()
    out = pairs[np.argsort(pairs["f0"], kind="stable")]
    hi = out["f0"]
    tie = hi[1:] == hi[:-1]
    if tie.any():
        rows = np.flatnonzero(np.concatenate([tie, [False]]) | np.concatenate([[False], tie]))
        group = out[rows]  # contiguous groups, in ascending upper word: a lexsort keeps each in place
        out[rows] = group[np.lexsort((group["f1"], group["f0"]))]
    return out


def is_sorted(pairs: np.ndarray) -> bool:
    """True when `pairs` is in ascending (upper, lower) order, as DataComp's resharder needs."""
    if len(pairs) < 2:
        return True
    hi, lo = pairs["f0"], pairs["f1"]
    prev_hi, next_hi = hi[:-1], hi[1:]
    return bool(((prev_hi < next_hi) | ((prev_hi == next_hi) & (lo[:-1] <= lo[1:]))).all())


def subset_counts(subset: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """How many times each of `pairs` is listed in the sorted `subset` (0 when absent)."""
    left = np.searchsorted(subset, pairs, side="left")
    right = np.searchsorted(subset, pairs, side="right")
    return (right - left).astype(np.int64)
