"""open_clip's train crop (torchvision's RandomResizedCrop, Pillow's BICUBIC) to uint8 CHW, bit for bit, compiled.

Why: after the uint8 batches (`pixels`), Pillow's resize is most of what a loader worker does for a sample
(about 1.2 of 2.6 ms at 256 -> 224 px). Pillow resamples each pass with a scalar loop per pixel and channel;
here both passes run over whole rows at once, one vector multiply-add per filter tap (pHash's row pass,
`curate.signals.resize._resample_cols`): the vertical pass on the image, the horizontal one on its
transpose, whole RGBX pixels moved by each transpose. The crop is read in place from Pillow's own pixel
buffer, and the result comes out in the CHW layout the model takes: 0.24 ms for the resize.

What is reproduced (Pillow 13's Resample.c, 8 bits a channel; tests compare with Pillow over many sizes):
- the bicubic filter (a = -0.5, support 2, widened by the scale when shrinking), each output's weights
  normalised to sum 1 in double precision and rounded to 22 fractional bits (`precompute_coeffs`,
  `normalize_coeffs_8bpc`), in the same operations and order;
- each pass: clip8((sum(w * x) + 2**21) >> 22) in int32, the intermediate image rounded to uint8;
- the order: horizontal first, except when the height shrinks by more than twice what the width shrinks
  (measured against Pillow 13, as `curate.signals.resize.vertical_first` for pHash);
- the crop parameters are torchvision's own draw (`RandomResizedCrop.get_params`, same RNG).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from curate.signals.resize import _resample_cols, packed

_ONE = float(1 << 22)  # Pillow's PRECISION_BITS for 8 bits a channel


@njit(cache=True, nogil=True)
def _bicubic(x):
    """Pillow's bicubic_filter with a = -0.5, operation for operation."""
    if x < 0.0:
        x = -x
    if x < 1.0:
        return (1.5 * x - 2.5) * x * x + 1.0  # ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5
    return 0.0


@njit(cache=True, nogil=True)
def _coeffs(in_size, out_size):
    """(first input, input count, int32 weights (out, ksize)) for in_size -> out_size, as Pillow's 8 bpc path."""
    scale = float(in_size) / out_size
    filterscale = scale if scale > 1.0 else 1.0
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    start = np.empty(out_size, np.int64)
    count = np.empty(out_size, np.int64)
    kk = np.zeros((out_size, ksize), np.int32)
    k = np.empty(ksize, np.float64)
    ss = 1.0 / filterscale
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = int(center - support + 0.5)
        if xmin < 0:
            xmin = 0
        xmax = int(center + support + 0.5)
        if xmax > in_size:
            xmax = in_size
        n = xmax - xmin
        ww = 0.0
        for x in range(n):
            w = _bicubic((x + xmin - center + 0.5) * ss)
            k[x] = w
            ww += w
        for x in range(n):
            w = k[x]
            if ww != 0.0:
                w = w / ww
            kk[xx, x] = np.int32(int(-0.5 + w * _ONE)) if w < 0 else np.int32(int(0.5 + w * _ONE))
        start[xx] = xmin
        count[xx] = n
    return start, count, kk


def vertical_first(w: int, h: int, ow: int, oh: int) -> bool:
    """Pillow 13's pass order: vertical first only when the height shrinks, by more than twice the width."""
    return h > oh and h - oh > 2 * (w - ow)


def _bytes(pixels: np.ndarray) -> np.ndarray:
    """(a, n) uint32 RGBX pixels as the (a, n * 4) uint8 rows `_resample_cols` passes over (no copy)."""
    return pixels.view(np.uint8).reshape(pixels.shape[0], pixels.shape[1] * 4)


def _pass(pixels: np.ndarray, y0: int, start, count, kk) -> np.ndarray:
    """One row pass over (a, n) uint32 RGBX pixels: the (len(start), n) uint32 RGBX result."""
    out = np.empty((start.shape[0], pixels.shape[1]), np.uint32)
    _resample_cols(_bytes(pixels), y0, start, count, kk, _bytes(out))
    return out


def resize_chw(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`Image.fromarray(pixels).resize((ow, oh), BICUBIC)` of RGB pixels as (3, oh, ow) uint8; `size` is (oh, ow),
    torchvision's order. pixels: (h, w) uint32 RGBX (`phash.pixel_view` of an RGB image) or (h, w, 3|4) uint8
    (a 4th byte ignored), with any strides, e.g. a crop of a larger image.

    Both passes run as row passes (`_resample_cols`, whole rows a weight): the horizontal one on the
    transposed image, whole RGBX pixels moved by each transpose.
    """
    if pixels.ndim == 2 and pixels.dtype != np.uint32 or pixels.ndim == 3 and pixels.dtype != np.uint8:
        raise ValueError(f"expected (h, w) uint32 RGBX or (h, w, 3|4) uint8 pixels, got {pixels.dtype} "
                         f"{pixels.shape}")
    oh, ow = size
    if min(*pixels.shape[:2], oh, ow) < 1:
        raise ValueError(f"cannot resize {pixels.shape[1]}x{pixels.shape[0]} to {ow}x{oh}")
    pixels = packed(pixels)  # (h, w) uint32 RGBX, one copy of the crop
    h, w = pixels.shape
    hs, hc, hk = _coeffs(w, ow)
    vs, vc, vk = _coeffs(h, oh)
    need_h, need_v = ow != w, oh != h
    if need_h and need_v and vertical_first(w, h, ow, oh):
        cols = _pass(np.ascontiguousarray(_pass(pixels, 0, vs, vc, vk).T), 0, hs, hc, hk)  # (ow, oh)
        return np.ascontiguousarray(_bytes(cols).reshape(ow, oh, 4).transpose(2, 1, 0)[:3])
    y0 = int(vs[0]) if need_v else 0  # only the rows the vertical pass reads, as Pillow
    rows = pixels[y0:int(vs[-1] + vc[-1])] if need_v else pixels
    if need_h:
        rows = np.ascontiguousarray(_pass(np.ascontiguousarray(rows.T), 0, hs, hc, hk).T)
    if need_v:
        rows = _pass(rows, y0, vs, vc, vk)
    return np.ascontiguousarray(_bytes(rows).reshape(oh, ow, 4).transpose(2, 0, 1)[:3])


class ResizedCrop:
    """A train transform's crop part (RandomResizedCrop, BICUBIC, then only conversions to RGB) as one call:
    an RGB PIL image in, its uint8 CHW tensor out, equal to the crop part followed by `np.array` bytes."""

    def __init__(self, crop):
        self.crop = crop

    @classmethod
    def of(cls, steps) -> "ResizedCrop | None":
        """The fast form of these transform steps, or None when they are anything else."""
        from torchvision import transforms

        if not steps or type(steps[0]) is not transforms.RandomResizedCrop:
            return None
        crop = steps[0]
        if crop.interpolation != transforms.InterpolationMode.BICUBIC or not crop.antialias:
            return None
        if not all(_to_rgb(step) for step in steps[1:]):
            return None
        return cls(crop)

    def __call__(self, image):
        import torch

        from curate.signals.phash import pixel_view

        top, left, h, w = self.crop.get_params(image, self.crop.scale, self.crop.ratio)  # torchvision's draw
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = pixel_view(image)  # Pillow's own RGBX buffer, or a copy of a very large image's pixels
        size = self.crop.size
        return torch.from_numpy(resize_chw(pixels[top:top + h, left:left + w], (size[0], size[1])))


def _to_rgb(step) -> bool:
    """Whether a transform step only converts a PIL image to RGB (open_clip's MaybeConvertMode, _convert_to_rgb)."""
    if type(step).__name__ == "MaybeConvertMode":
        return getattr(step, "mode", None) == "RGB"
    return getattr(step, "__name__", None) == "_convert_to_rgb"
