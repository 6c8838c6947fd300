"""Pillow's LANCZOS resize of an 8-bit "L" image to 32x32, bit for bit, as matrix products.

Why: pHash must equal imagehash's, which resizes with Pillow. Pillow's scalar fixed-point loop costs
more than half a JPEG decode; the same integer arithmetic done as float64 matrix products is exact
(every partial sum is an integer below 2**53) and several times faster.

What is reproduced (Pillow's Resample.c, 8 bits per channel):
- weights: lanczos3 scaled by max(in/out, 1), each row normalised to sum 1 in double precision,
  then rounded to fixed point with 22 fractional bits (`normalize_coeffs_8bpc`);
- each pass: out = clip((sum(w * x) + 2**21) >> 22, 0, 255), with the intermediate image rounded
  to uint8 between the two passes;
- pass order: Pillow 13 runs the vertical pass first for tall images (`vertical_first`, measured
  against Pillow over every size up to a few hundred pixels, and pinned by tests/signals).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

SIZE = 32
_PRECISION_BITS = 22
_HALF = float(1 << (_PRECISION_BITS - 1))
_INV_ONE = 1.0 / (1 << _PRECISION_BITS)
_GROUP = 8  # outputs per band of the big pass: skips the zero weights outside each band


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


@lru_cache(maxsize=4096)
def weights(in_size: int, out_size: int = SIZE) -> np.ndarray:
    """Fixed-point weights as a dense (out_size, in_size) float64 matrix of integers.

    Follows Pillow's `precompute_coeffs` operation by operation (same libm `sin`, same order),
    so the rounding to fixed point lands on the same integers.
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    ss = 1.0 / filterscale
    out = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        n = min(int(center + support + 0.5), in_size) - xmin
        ws = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(n)]
        ww = 0.0
        for w in ws:
            ww += w
        for x, w in enumerate(ws):
            if ww != 0.0:
                w = w / ww
            fixed = w * (1 << _PRECISION_BITS)
            out[xx, xmin + x] = int(-0.5 + fixed) if w < 0 else int(0.5 + fixed)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4096)
def _bands(in_size: int) -> tuple[tuple[int, int, int, int], ...]:
    """(first output, last output, first input, end input) of each band of _GROUP outputs."""
    w = weights(in_size)
    bands = []
    for lo in range(0, SIZE, _GROUP):
        hi = min(lo + _GROUP, SIZE)
        cols = np.flatnonzero(w[lo:hi].any(axis=0))
        start, end = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 0)
        bands.append((lo, hi, start, end))
    return tuple(bands)


def _fixed_round(acc: np.ndarray) -> np.ndarray:
    """Pillow's clip8(ss + 2**21): floor division by 2**22 (exact in float64), clipped to 0..255."""
    acc += _HALF
    acc *= _INV_ONE
    np.floor(acc, out=acc)
    return np.clip(acc, 0.0, 255.0, out=acc)


def _rows_pass(x: np.ndarray) -> np.ndarray:
    """Resample along axis 1 (Pillow's horizontal pass): (h, w) -> (h, 32), banded.

    Computed as weights @ x.T: BLAS reads x transposed in place, and the wide output keeps the
    small band products efficient (measured faster than x @ weights.T).
    """
    in_size = x.shape[1]
    w = weights(in_size)
    acc = np.empty((SIZE, x.shape[0]), dtype=np.float64)
    for lo, hi, start, end in _bands(in_size):
        np.matmul(w[lo:hi, start:end], x[:, start:end].T, out=acc[lo:hi])
    return _fixed_round(acc).T


def _cols_pass(x: np.ndarray) -> np.ndarray:
    """Resample along axis 0 (Pillow's vertical pass): (h, w) -> (32, w), banded."""
    in_size = x.shape[0]
    w = weights(in_size)
    acc = np.empty((SIZE, x.shape[1]), dtype=np.float64)
    for lo, hi, start, end in _bands(in_size):
        np.matmul(w[lo:hi, start:end], x[start:end], out=acc[lo:hi])
    return _fixed_round(acc)


def vertical_first(width: int, height: int) -> bool:
    """Whether Pillow 13 runs the vertical pass before the horizontal one for a 32x32 output.

    Measured: only when the height shrinks, and by more than twice what the width shrinks.
    """
    return height > SIZE and height - SIZE > 2 * (width - SIZE)


def resize32(pixels: np.ndarray) -> np.ndarray:
    """`Image.fromarray(pixels).resize((32, 32), LANCZOS)` for a 2-D uint8 array, as uint8."""
    h, w = pixels.shape
    x = pixels.astype(np.float64)
    if w != SIZE and h != SIZE and vertical_first(w, h):
        x = _rows_pass(_cols_pass(x))
    else:
        if w != SIZE:
            x = _rows_pass(x)
        if h != SIZE:
            x = _cols_pass(x)
    return x.astype(np.uint8)
