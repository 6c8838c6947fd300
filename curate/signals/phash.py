"""pHash equal to `str(imagehash.phash(img))` bit for bit, computed faster.

imagehash 4.x: `img.convert("L").resize((32, 32), LANCZOS)`, then
`scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)`, top-left 8x8 block, bit = value > median.

Why it is faster and still exact:
- `convert("L")` and the resize are one compiled pass (`resize.resize32_packed`, Pillow's integer
  arithmetic), reading an RGB or L image's pixels in place through Pillow's Arrow export: no copy and
  no "L" image; other modes (CMYK, P, RGBA, I;16, ...) still go through Pillow's own `convert("L")`;
- only the 8x8 low-frequency block is computed, as C @ P @ C.T with the 8x32 DCT-II basis
  C[k, n] = 2 cos(pi k (2n + 1) / 64) (scipy's unnormalised DCT-II), batched over a shard as one matmul;
- a bit depends on floating-point order only when the two middle coefficients nearly tie (flat
  images: all AC coefficients are 0 in exact arithmetic and scipy's output is rounding noise). Such
  hashes are recomputed with imagehash's own scipy calls on the same 32x32 pixels. Away from a tie
  both computations are within ~1e-13 relative of the exact value, so they agree.

Hash encoding: imagehash's hex string is the 64 bits row-major, first bit most significant; the
uint64 form used for Hamming search is that same number.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
from PIL import Image

from curate.signals.resize import RGBX, SIZE, packed, resize32_packed

HASH_SIZE = 8
_N = np.arange(SIZE)
DCT_BASIS = 2.0 * np.cos(np.pi * np.arange(HASH_SIZE)[:, None] * (2 * _N[None, :] + 1) / (2 * SIZE))
DCT_BASIS.setflags(write=False)
# Far above the rounding error of either DCT (~1e-14 of the DC term), far below a real gap.
_TIE_RTOL = 1e-9


# Modes whose pixels the kernel converts itself, exactly as Pillow's convert("L") would.
KERNEL_MODES = ("RGB", "L")


def luminance_source(image: Image.Image) -> Image.Image:
    """The image `pixels32` reads: itself for RGB and L, else Pillow's `convert("L")` (which may raise)."""
    image.load()  # a few formats settle their mode on load
    return image if image.mode in KERNEL_MODES else image.convert("L")


def pixel_view(image: Image.Image) -> np.ndarray:
    """An RGB or L image's pixels as the kernel reads them ((h, w) uint32 RGBX or uint8), without a copy.

    Pillow's Arrow export hands out its own buffer (RGB is stored 4 bytes a pixel). Pillow refuses it for
    an image stored in several blocks (over 16 MB of pixels by default): np.asarray's copy then.
    """
    try:
        arr = pa.array(image)
    except ValueError:
        return packed(np.asarray(image))
    w, h = image.size
    buf = arr.buffers()[-1]  # the view holds it, and through it Pillow's export and the pixels
    if image.mode == "RGB":
        return np.frombuffer(buf, RGBX, count=h * w).reshape(h, w).astype(np.uint32, copy=False)
    return np.frombuffer(buf, np.uint8, count=h * w).reshape(h, w)


def pixels32(image: Image.Image) -> np.ndarray:
    """The 32x32 uint8 pixels imagehash hashes: `image.convert("L").resize((32, 32), LANCZOS)`."""
    return resize32_packed(pixel_view(luminance_source(image)))


def _reference_bits(pixels: np.ndarray) -> np.ndarray:
    """imagehash's own computation on 32x32 pixels: the fallback for near-ties."""
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    low = dct[:HASH_SIZE, :HASH_SIZE]
    return (low > np.median(low)).ravel()


def _bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """(N, 64) bools, first bit most significant -> (N,) uint64."""
    return np.packbits(bits, axis=-1).view(">u8")[:, 0].astype(np.uint64)


def hash_pixels(pixels: np.ndarray) -> np.ndarray:
    """pHash of a stack of 32x32 uint8 images, shape (N, 32, 32) -> (N,) uint64."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"expected (N, {SIZE}, {SIZE}) pixels, got {pixels.shape}")
    low = DCT_BASIS @ pixels.astype(np.float64) @ DCT_BASIS.T  # (N, 8, 8)
    flat = low.reshape(len(pixels), HASH_SIZE * HASH_SIZE)
    ordered = np.sort(flat, axis=1)
    lower, upper = ordered[:, 31], ordered[:, 32]
    median = (lower + upper) / 2
    bits = flat > median[:, None]
    ties = np.flatnonzero(upper - lower <= _TIE_RTOL * (np.abs(flat[:, 0]) + 1.0))
    for i in ties:
        bits[i] = _reference_bits(pixels[i])
    return _bits_to_uint64(bits)


def phash_int(image: Image.Image) -> int:
    """pHash of one PIL image (any mode Pillow converts to "L") as an unsigned 64-bit int."""
    return int(hash_pixels(pixels32(image)[None])[0])


def phash(image: Image.Image) -> str:
    """`str(imagehash.phash(image))`: 16 hex characters."""
    return int_to_hex(phash_int(image))


def phash_batch(images: Iterable[Image.Image]) -> np.ndarray:
    """pHashes of many images as (N,) uint64: one resize each, one DCT matmul for all."""
    stack = [pixels32(im) for im in images]
    if not stack:
        return np.zeros(0, dtype=np.uint64)
    return hash_pixels(np.stack(stack))


def int_to_hex(value: int) -> str:
    """uint64 -> imagehash's 16-character hex string."""
    return f"{int(value):016x}"


def hex_to_int(text: str) -> int:
    """imagehash's 16-character hex string -> uint64 (as a Python int)."""
    if len(text) != 16:
        raise ValueError(f"a 64-bit pHash is 16 hex characters, got {text!r}")
    return int(text, 16)


def hex_to_uint64(texts: Sequence[str]) -> np.ndarray:
    """Hex strings -> (N,) uint64 array, for Hamming search."""
    return np.array([hex_to_int(t) for t in texts], dtype=np.uint64)


def uint64_to_hex(values: np.ndarray) -> list[str]:
    """(N,) uint64 array -> hex strings."""
    return [int_to_hex(v) for v in np.asarray(values, dtype=np.uint64).tolist()]


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting), as imagehash's `h1 - h2`."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)
