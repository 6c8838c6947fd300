"""Exact pool-wide ranks without pulling the pool into one process: a radix select over partitions.

DataComp's fraction thresholds need the score at rank int(N*f) of the whole pool sorted descending.
Each pass asks every partition for a 65,536-bin histogram of the next 16 bits of an order-preserving
integer key, restricted to the rows whose higher bits match the prefix found so far; four passes fix all
64 bits, so the answer is exact (bit for bit the float NumPy's sort would put at that rank) and each
partition sends back only 512 KB per pass. The same code runs on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.engines import Engine
from curate.columns import read_columns
from filters.rules import float_column

BITS_PER_PASS = 16
BINS = 1 << BITS_PER_PASS
PASSES = 64 // BITS_PER_PASS
_SIGN = np.uint64(1 << 63)


def descending_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys whose ascending order is the floats' descending order (NaNs excluded by the caller)."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    ascending = np.where(bits & _SIGN, ~bits, bits | _SIGN)
    return ~ascending


def key_to_float(key: int) -> float:
    ascending = ~np.uint64(key)
    bits = np.where(ascending & _SIGN, ascending & ~_SIGN, ~ascending)
    return float(np.asarray(bits, dtype=np.uint64).view(np.float64))


@dataclass(frozen=True)
class HistogramTask:
    path: str
    column: str
    level: int  # 0..PASSES-1: which 16 bits, from the top
    prefix: int  # the top 16*level bits already fixed
    pool_root: str = ""


def partition_histogram(task: HistogramTask) -> tuple[np.ndarray, int]:
    """Histogram of the next 16 key bits among rows matching the prefix; and the partition's row count."""
    values = float_column(read_columns(task.pool_root, task.path, [task.column]).column(task.column))
    keys = descending_keys(values[~np.isnan(values)])
    if task.level:
        shift = np.uint64(64 - BITS_PER_PASS * task.level)
        keys = keys[(keys >> shift) == np.uint64(task.prefix)]
    shift = np.uint64(64 - BITS_PER_PASS * (task.level + 1))
    digits = ((keys >> shift) & np.uint64(BINS - 1)).astype(np.int64)
    return np.bincount(digits, minlength=BINS).astype(np.int64), len(values)


def value_at_descending_rank(engine: Engine, paths: list[str], column: str, fraction: float, pool_root: str = "") -> tuple[float, int, int]:
    """The value at rank int(N*fraction) of `column` over all `paths`, sorted descending (NaNs last).

    Returns (value, rank, N). The value is NaN when the rank falls among the missing scores, as in DataComp.
    """
    prefix = 0
    remaining_rank = None
    total = 0
    rank = 0
    for level in range(PASSES):
        tasks = [HistogramTask(p, column, level, prefix, pool_root) for p in paths]
        results = engine.map(partition_histogram, tasks, desc=f"threshold {column} pass {level + 1}/{PASSES}")
        hist = np.sum([h for h, _ in results], axis=0)
        if level == 0:
            total = int(sum(n for _, n in results))
            rank = int(total * fraction)
            if rank >= int(hist.sum()):  # the rank lands on a NaN (or past the end)
                return float("nan"), rank, total
            remaining_rank = rank
        cumulative = np.cumsum(hist)
        digit = int(np.searchsorted(cumulative, remaining_rank, side="right"))
        remaining_rank -= int(cumulative[digit - 1]) if digit else 0
        prefix = (prefix << BITS_PER_PASS) | digit
    return key_to_float(prefix), rank, total
