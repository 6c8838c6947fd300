"""Pillow's `convert("L")` and LANCZOS resize to 32x32, bit for bit, in one compiled pass.

Why: pHash must equal imagehash's, which converts to "L" and resizes with Pillow. Done by Pillow that is
two full-image passes (convert, then the scalar fixed-point resample) costing more than half a JPEG
decode. The numba kernel here reads the decoded RGB (or L) pixels once: each row becomes luma in a
small buffer and is resampled horizontally at once, while it is in L1: one cheap pass after the decode.

What is reproduced:
- luma (Pillow's Convert.c, `rgb2l`): L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, checked
  against Pillow over all 2**24 colours by tests/signals;
- weights (Pillow's Resample.c, 8 bits per channel): lanczos3 scaled by max(in/out, 1), each row
  normalised to sum 1 in double precision, then rounded to fixed point with 22 fractional bits
  (`precompute_coeffs`, `normalize_coeffs_8bpc`), computed here in Python with the same libm `sin`;
- each pass: out = clip8((sum(w * x) + 2**21) >> 22) in int32 like Pillow's, the intermediate image
  rounded to uint8; the vectorised sums add in another order, which wrapping int32 arithmetic makes
  exact (every final sum fits in int32, as Pillow itself relies on);
- pass order: Pillow 13 runs the vertical pass first for tall images (`vertical_first`, measured
  against Pillow over every size up to a few hundred pixels, and pinned by tests/signals).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit

SIZE = 32
_PRECISION_BITS = 22
_HALF = 1 << (_PRECISION_BITS - 1)


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
def coeffs(in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's fixed-point weights for in_size -> 32: (first input, input count, weights (32, k) int32).

    Follows `precompute_coeffs` operation by operation (same libm `sin`, same order), so the rounding
    to fixed point lands on the same integers.
    """
    scale = float(in_size) / SIZE
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    ss = 1.0 / filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    start = np.zeros(SIZE, dtype=np.int64)
    count = np.zeros(SIZE, dtype=np.int64)
    kk = np.zeros((SIZE, ksize), dtype=np.int32)
    for xx in range(SIZE):
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
            kk[xx, x] = int(-0.5 + fixed) if w < 0 else int(0.5 + fixed)
        start[xx], count[xx] = xmin, n
    for a in (start, count, kk):
        a.setflags(write=False)
    return start, count, kk


def weights(in_size: int) -> np.ndarray:
    """The same weights as a dense (32, in_size) float64 matrix (for tests and inspection)."""
    start, count, kk = coeffs(in_size)
    out = np.zeros((SIZE, in_size), dtype=np.float64)
    for xx in range(SIZE):
        out[xx, start[xx]:start[xx] + count[xx]] = kk[xx, :count[xx]]
    return out


def vertical_first(width: int, height: int) -> bool:
    """Whether Pillow 13 runs the vertical pass before the horizontal one for a 32x32 output.

    Measured: only when the height shrinks, and by more than twice what the width shrinks.
    """
    return height > SIZE and height - SIZE > 2 * (width - SIZE)


# ---- the compiled pass ---------------------------------------------------------------------------------
# cache=True: compiled once per machine into __pycache__; nogil: loader threads can run it side by side.
# Sums are kept int32 by truncating each step (`np.int32(...)`), as Pillow's `int` sums: numba would
# otherwise widen them to int64, which AVX2 has no vector multiply for.


@njit(cache=True, nogil=True)
def _clip8(acc):
    v = acc >> _PRECISION_BITS
    return 0 if v < 0 else (255 if v > 255 else v)


@njit(cache=True, nogil=True)
def _luma_row(src, gray, out):
    """One row as Pillow's "L": uint8 pixels as they are (gray), else uint32 RGBX pixels through rgb2l."""
    if gray:
        for x in range(src.shape[0]):
            out[x] = src[x]
    else:
        for x in range(src.shape[0]):
            p = src[x]  # little-endian RGBX: R in the low byte
            out[x] = np.int32(((p & 255) * 19595 + ((p >> 8) & 255) * 38470 + ((p >> 16) & 255) * 7471
                               + 0x8000) >> 16)


@njit(cache=True, nogil=True)
def _luma(src, gray):
    h, w = src.shape
    out = np.empty((h, w), np.uint8)
    row = np.empty(w, np.int32)
    for y in range(h):
        _luma_row(src[y], gray, row)
        for x in range(w):
            out[y, x] = row[x]
    return out


@njit(cache=True, nogil=True)
def _resample_row(row, start, count, kk, out):
    """Horizontal pass of one row: out[xx] = clip8(sum_k row[start[xx] + k] * kk[xx, k] + half)."""
    for xx in range(SIZE):
        seg = row[start[xx]:start[xx] + count[xx]]  # a slice from 0: no negative-index checks in the loop
        wts = kk[xx]
        acc = np.int32(_HALF)
        for k in range(seg.shape[0]):
            acc = np.int32(acc + seg[k] * wts[k])
        out[xx] = _clip8(acc)


@njit(cache=True, nogil=True)
def _resample_cols(img, y0, start, count, kk, out):
    """Vertical pass: out[yy] = clip8(sum_k img[start[yy] - y0 + k] * kk[yy, k] + half), row-wise.

    Whole rows at a time (a vector multiply-add per weight); also train.crop's pass, on both axes.
    """
    w = img.shape[1]
    acc = np.empty(w, np.int32)
    for yy in range(start.shape[0]):
        acc[:] = _HALF
        s0 = start[yy] - y0
        wts = kk[yy]
        for k in range(count[yy]):
            r = img[s0 + k]
            wk = wts[k]
            for x in range(w):
                acc[x] = np.int32(acc[x] + r[x] * wk)
        o = out[yy]
        for x in range(w):
            o[x] = _clip8(acc[x])


@njit(cache=True, nogil=True)
def _luma_resize32(src, gray, hstart, hcount, hk, vstart, vcount, vk, vfirst):
    """`convert("L").resize((32, 32), LANCZOS)` of (h, w) pixels: uint8 "L" (gray) or uint32 RGBX."""
    h, w = src.shape
    need_h, need_v = w != SIZE, h != SIZE
    out = np.empty((SIZE, SIZE), np.uint8)
    row = np.empty(w, np.int32)
    # Only the input rows the vertical pass reads (Pillow's ybox_first..ybox_last).
    y0, y1 = (vstart[0], vstart[SIZE - 1] + vcount[SIZE - 1]) if need_v else (0, h)
    if need_h and need_v and vfirst:
        lum = np.empty((y1 - y0, w), np.int32)
        for y in range(y0, y1):
            _luma_row(src[y], gray, lum[y - y0])
        tmp = np.empty((SIZE, w), np.int32)
        _resample_cols(lum, y0, vstart, vcount, vk, tmp)
        for yy in range(SIZE):
            _resample_row(tmp[yy], hstart, hcount, hk, out[yy])
        return out
    # Horizontal first (Pillow's usual order), each row's luma resampled while it is in L1.
    tmp = np.empty((y1 - y0, SIZE if need_h else w), np.int32)
    for y in range(y0, y1):
        if need_h:
            _luma_row(src[y], gray, row)
            _resample_row(row, hstart, hcount, hk, tmp[y - y0])
        else:
            _luma_row(src[y], gray, tmp[y - y0])
    if need_v:
        _resample_cols(tmp, y0, vstart, vcount, vk, out)
    else:
        for y in range(SIZE):
            for x in range(SIZE):
                out[y, x] = tmp[y, x]
    return out


# Pillow stores an RGB pixel as 4 bytes R, G, B, pad: read as one little-endian uint32 (R in the low byte).
RGBX = np.dtype("<u4")


def packed(pixels: np.ndarray) -> np.ndarray:
    """(h, w) uint8 "L" or (h, w, 3|4) uint8 RGB(X) -> what the kernel reads: (h, w) uint8 or uint32 RGBX.

    (h, w) uint32 RGBX (`phash.pixel_view` of an RGB image) passes as it is.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2 and pixels.dtype in (np.uint8, np.uint32):
        return np.ascontiguousarray(pixels)
    if pixels.dtype != np.uint8 or not (pixels.ndim == 3 and pixels.shape[2] in (3, 4)):
        raise ValueError(f"expected (h, w) or (h, w, 3|4) uint8 pixels, got {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape[:2]
    if pixels.shape[2] == 3:  # packed RGB (np.asarray of an image): pad to RGBX, a copy
        rgbx = np.empty((h, w, 4), np.uint8)
        rgbx[..., :3] = pixels
        pixels = rgbx
    # astype: no copy on little-endian machines, a byte swap into native order elsewhere
    return np.ascontiguousarray(pixels).view(RGBX).reshape(h, w).astype(np.uint32, copy=False)


def resize32_packed(src: np.ndarray) -> np.ndarray:
    """`convert("L").resize((32, 32), LANCZOS)` of the kernel's input: (h, w) uint8 "L" or uint32 RGBX."""
    if src.ndim != 2 or src.dtype not in (np.uint8, np.uint32):  # each dtype is one compiled specialisation
        raise ValueError(f"expected (h, w) uint8 or uint32 pixels, got {src.dtype} {src.shape}")
    h, w = src.shape
    if h == 0 or w == 0:
        raise ValueError(f"cannot resize an empty image ({w}x{h})")
    if src.flags.writeable:  # numba compiles read-only and writable arrays apart: one kind is enough
        src = src.view()
        src.setflags(write=False)
    hs, hc, hk = coeffs(w)
    vs, vc, vk = coeffs(h)
    return _luma_resize32(src, src.dtype == np.uint8, hs, hc, hk, vs, vc, vk, vertical_first(w, h))


def luma(pixels: np.ndarray) -> np.ndarray:
    """Pillow's `convert("L")` of RGB(X) pixels (any form `packed` takes), by the kernel's own row code."""
    src = packed(pixels)
    return _luma(src, src.dtype == np.uint8)


def luma_resize32(pixels: np.ndarray) -> np.ndarray:
    """`Image.fromarray(...).convert("L").resize((32, 32), LANCZOS)` as (32, 32) uint8.

    pixels: (h, w) "L", or (h, w, 3) RGB, or (h, w, 4) RGB plus an ignored fourth byte.
    """
    return resize32_packed(packed(pixels))


def resize32(pixels: np.ndarray) -> np.ndarray:
    """`Image.fromarray(pixels).resize((32, 32), LANCZOS)` for a 2-D uint8 ("L") array, as uint8."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 array, got {pixels.dtype} {pixels.shape}")
    return luma_resize32(pixels)
