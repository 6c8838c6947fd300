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
    """Sort and save `pairs` (a `u8,u8` array) as a DataComp subset file, whole or not at all."""
    pairs = np.asarray(pairs)
    if pairs.dtype != UID_DTYPE:
        raise SubsetFileError(f"subset rows must have dtype {UID_DTYPE}, got {pairs.dtype}")
    pairs = sort_pairs(pairs)
    path = storage.path(path)
    with atomic_open(path, "wb") as f:
        np.save(f, pairs, allow_pickle=False)
    return path


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
    if len(arr) > 1 and not _is_sorted(arr):
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
    """Sort uid pairs as np.sort would, fast: numpy sorts two-field structured arrays through a slow
    generic comparison (11 s for 3.8M uids), lexsort on the two words takes a fraction of that."""
    if len(pairs) < 2:
        return pairs.copy()
    return pairs[np.lexsort((pairs["f1"], pairs["f0"]))]


def subset_counts(subset: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """How many times each of `pairs` is listed in the sorted `subset` (0 when absent)."""
    left = np.searchsorted(subset, pairs, side="left")
    right = np.searchsorted(subset, pairs, side="right")
    return (right - left).astype(np.int64)


def _is_sorted(arr: np.ndarray) -> bool:
    hi, lo = arr["f0"], arr["f1"]
    prev_hi, next_hi = hi[:-1], hi[1:]
    ok = (prev_hi < next_hi) | ((prev_hi == next_hi) & (lo[:-1] <= lo[1:]))
    return bool(ok.all())
