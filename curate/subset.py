"""DataComp subset files: `np.save` of a sorted `u8,u8` array, one row per selected sample (repeats upsample).

Read back with checks, because a subset file may come from anyone: wrong dtype, unsorted rows or a
pickled object array get a clear error instead of a silent wrong selection.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def write_subset_runs(path: str | os.PathLike, runs: list[np.ndarray], slices: int = 256) -> tuple[Path, int]:
    """Save the distinct rows of sorted `runs` (`u8,u8` arrays, each sorted, such as each partition's kept uids)
    as one DataComp subset file, byte for byte what `write_subset(distinct rows)` writes; return (path, rows).

    The runs are merged one slice of the upper word's range at a time (cut where a sample of the runs' values
    says, so slices hold about equal rows), each slice sorted and its repeats dropped, and written as it is
    made: the pool's kept uids are never copied whole. The .npy header leaves room for any row count (numpy
    pads a 1-D header for it), so it is written first and rewritten with the final count."""
    runs = [np.asarray(r) for r in runs if len(r)]
    if any(r.dtype != UID_DTYPE for r in runs):
        raise SubsetFileError(f"subset rows must have dtype {UID_DTYPE}")
    sample = np.sort(np.concatenate([r["f0"][:: max(1, len(r) // slices)] for r in runs])) if runs else np.zeros(0, np.uint64)
    bounds = np.unique(sample[:: max(1, len(sample) // slices)])
    cuts = [np.concatenate([[0], np.searchsorted(r["f0"], bounds), [len(r)]]) for r in runs]
    path = storage.path(path)
    rows = 0
    with atomic_open(path, "wb") as f:
        _write_header(f, sum(len(r) for r in runs))
        data_at = f.tell()
        for i in range(len(bounds) + 1):
            part = sort_pairs(np.concatenate([r[c[i] : c[i + 1]] for r, c in zip(runs, cuts)])) if runs else np.zeros(0, UID_DTYPE)
            if len(part) > 1:
                new = np.ones(len(part), dtype=bool)
                new[1:] = (part["f0"][1:] != part["f0"][:-1]) | (part["f1"][1:] != part["f1"][:-1])
                part = part if new.all() else part[new]
            f.write(np.ascontiguousarray(part).data)
            rows += len(part)
        f.seek(0)
        _write_header(f, rows)
        if f.tell() != data_at:
            raise RuntimeError(f"{path}: the .npy header changed length; the file would be corrupt")
    return path, rows


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
        shape, dtype = _read_header(path, f)
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


def _read_header(path: Path, f) -> tuple[tuple, np.dtype]:
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
