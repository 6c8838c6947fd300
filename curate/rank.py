"""Exact pool-wide ranks without pulling the pool into one process: a radix select over partitions.

DataComp's fraction thresholds need the score at rank int(N*f) of the whole pool sorted descending.
Each pass asks every partition for a 65,536-bin histogram of the next 16 bits of an order-preserving
integer key, restricted to the rows whose higher bits match the prefix found so far. Keys are 32 bits
(two passes) when every score of the pool is a float32 value, as DataComp's scores are, else 64 bits (four
passes): the first pass uses 32-bit keys where a partition's scores allow, and a partition that holds a
value float32 cannot makes the others redo that pass with 64-bit keys. Either way the answer is exact (bit
for bit the float NumPy's sort would put at that rank) and each partition sends back only its histogram's
non-empty bins. The same code runs on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.columns import read_columns
from curate.engines import Engine
from curate.pool import names_partition
from filters.rules import score_values

BITS_PER_PASS = 16
BINS = 1 << BITS_PER_PASS
_UINT = {32: np.uint32, 64: np.uint64}
_FLOAT = {32: np.float32, 64: np.float64}


def descending_keys(values: np.ndarray, bits: int = 64) -> np.ndarray:
    """Unsigned `bits`-wide keys whose ascending order is the floats' descending order (NaNs excluded by the
    caller; with bits=32 the values must be float32 values)."""
    uint = _UINT[bits]
    sign = uint(1 << (bits - 1))
    raw = np.ascontiguousarray(values, dtype=_FLOAT[bits]).view(uint)
    ascending = np.where(raw & sign, ~raw, raw | sign)
    return ~ascending


def key_to_float(key: int, bits: int = 64) -> float:
    uint = _UINT[bits]
    sign = uint(1 << (bits - 1))
    ascending = ~uint(key)
    raw = np.where(ascending & sign, ascending & ~sign, ~ascending)
    return float(np.asarray(raw, dtype=uint).view(_FLOAT[bits]))


@dataclass(frozen=True)
class HistogramTask:
    path: str
    column: str
    level: int  # 0..bits/16-1: which 16 bits, from the top
    prefix: int  # the top 16*level bits already fixed
    pool_root: str = ""
    bits: int = 64  # key width; 0 in the first pass: 32 when every score here is a float32 value, else 64


def _fits_float32(values: np.ndarray) -> bool:
    return values.dtype == np.float32 or bool((values.astype(np.float32).astype(values.dtype) == values).all())


def _digits_histogram(keys: np.ndarray, bits: int, level: int, prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """The histogram's non-empty bins and their counts (scores crowd a few bins: a few KB to send, not 512 KB)."""
    uint = _UINT[bits]
    if level:
        keys = keys[(keys >> uint(bits - BITS_PER_PASS * level)) == uint(prefix)]
    digits = (keys >> uint(bits - BITS_PER_PASS * (level + 1))) & uint(BINS - 1)
    counts = np.bincount(digits.astype(np.intp), minlength=BINS)
    bins = np.flatnonzero(counts)
    return bins.astype(np.uint16), counts[bins].astype(np.int64)


def _dense(parts) -> np.ndarray:
    """The sum of (bins, counts) histograms, each added as it comes (an iterator: the driver holds one at a time)."""
    hist = np.zeros(BINS, dtype=np.int64)
    for bins, counts in parts:
        hist[bins] += counts  # bins are distinct within a part
    return hist


@names_partition(lambda task: task.path)
def partition_histogram(task: HistogramTask) -> tuple[tuple[np.ndarray, np.ndarray], int, int]:
    """Histogram (non-empty bins, counts) of the next 16 key bits among rows matching the prefix, the
    partition's row count, and the key width used (the first pass picks it: see HistogramTask.bits)."""
    values = score_values(read_columns(task.pool_root, task.path, [task.column]).column(task.column))
    n = len(values)
    if task.level:  # only the rows of the prefix's bin matter: find them by value, then key only those
        values = values[_in_bin(values, task.bits, task.level, task.prefix)]
    else:
        values = values[~np.isnan(values)]
    bits = task.bits or (32 if _fits_float32(values) else 64)
    return _digits_histogram(descending_keys(values, bits), bits, task.level, task.prefix), n, bits


def _in_bin(values: np.ndarray, bits: int, level: int, prefix: int) -> np.ndarray:
    """A mask of the values (never NaN) whose key may start with `prefix`: those between the floats at the
    bin's two ends, a superset (-0.0 and 0.0 compare equal; an end that decodes to NaN lies past an infinity)
    that `_digits_histogram` narrows to the exact keys."""
    free = bits - BITS_PER_PASS * level
    first, last = prefix << free, (prefix << free) | ((1 << free) - 1)
    high, low = key_to_float(first, bits), key_to_float(last, bits)  # descending keys: the first key is the largest value
    high = np.inf if np.isnan(high) else high
    low = -np.inf if np.isnan(low) else low
    values = values.astype(_FLOAT[bits], copy=False)
    return (values >= low) & (values <= high)


def value_at_descending_rank(engine: Engine, paths: list[str], column: str, fraction: float, pool_root: str = "") -> tuple[float, int, int]:
    """The value at rank int(N*fraction) of `column` over all `paths`, sorted descending (NaNs last).

    Returns (value, rank, N). The value is NaN when the rank falls among the missing scores, as in DataComp.
    """
    # Each partition's histogram is added as it arrives (by key width), not held: the driver keeps a width per file.
    first = {32: np.zeros(BINS, dtype=np.int64), 64: np.zeros(BINS, dtype=np.int64)}
    widths = [0] * len(paths)
    total = 0
    for i, ((bins, counts), n, b) in engine.imap_unordered(
            partition_histogram, [HistogramTask(p, column, 0, 0, pool_root, 0) for p in paths], desc=f"threshold {column} pass 1"):
        first[b][bins] += counts
        total += n
        widths[i] = b
    rank = int(total * fraction)
    bits = 32 if all(b == 32 for b in widths) else 64
    redo = [p for p, b in zip(paths, widths, strict=True) if b != bits]
    if redo:  # some partitions hold values float32 cannot: their first pass again, with 64-bit keys
        again = engine.imap_unordered(partition_histogram, [HistogramTask(p, column, 0, 0, pool_root, 64) for p in redo],
                                      desc=f"threshold {column} pass 1 (64-bit keys)")
        first[64] += _dense(h for _, (h, _, _) in again)
    hist = first[bits]
    if rank >= int(hist.sum()):  # the rank lands on a NaN (or past the end)
        return float("nan"), rank, total
    prefix, remaining_rank = 0, rank
    for level in range(bits // BITS_PER_PASS):
        if level:
            tasks = [HistogramTask(p, column, level, prefix, pool_root, bits) for p in paths]
            results = engine.imap_unordered(partition_histogram, tasks, desc=f"threshold {column} pass {level + 1}/{bits // BITS_PER_PASS}")
            hist = _dense(h for _, (h, _, _) in results)
        cumulative = np.cumsum(hist)
        digit = int(np.searchsorted(cumulative, remaining_rank, side="right"))
        remaining_rank -= int(cumulative[digit - 1]) if digit else 0
        prefix = (prefix << BITS_PER_PASS) | digit
    return key_to_float(prefix, bits), rank, total
