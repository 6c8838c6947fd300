"""DataComp subset files: `np.save` of a sorted `u8,u8` array, one row per selected sample (repeats upsample).

Read back with checks, because a subset file may come from anyone: wrong dtype, unsorted rows or a
pickled object array get a clear error instead of a silent wrong selection.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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
    path = Path(path)
    with atomic_open(path, "wb") as f:
        np.save(f, pairs, allow_pickle=False)
    return path


def read_subset(path: str | os.PathLike) -> np.ndarray:
    """Load and validate a subset file: dtype `u8,u8`, one dimension, sorted ascending."""
    path = Path(path)
    if not path.is_file():
        raise SubsetFileError(f"{path}: subset file not found")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise SubsetFileError(f"{path}: not a readable .npy file (no numpy header)")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as e:  # object arrays need pickle, which we refuse
        raise SubsetFileError(f"{path}: not a plain numpy array ({e})") from e
    except (OSError, EOFError) as e:
        raise SubsetFileError(f"{path}: not a readable .npy file ({e})") from e
    if not isinstance(arr, np.ndarray):
        raise SubsetFileError(f"{path}: expected one .npy array, found {type(arr).__name__}")
    if arr.dtype != UID_DTYPE:
        raise SubsetFileError(
            f"{path}: dtype is {arr.dtype}, DataComp subset files use {UID_DTYPE} "
            "(upper and lower 64 bits of each uid)"
        )
    if arr.ndim != 1:
        raise SubsetFileError(f"{path}: expected a 1-D array, got shape {arr.shape}")
    if len(arr) > 1 and not _is_sorted(arr):
        raise SubsetFileError(f"{path}: rows are not sorted; DataComp's resharder binary-searches them (sort with np.sort)")
    return arr


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
