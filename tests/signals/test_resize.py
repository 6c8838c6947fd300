"""The kernel equals Pillow's `convert("L").resize((32, 32), LANCZOS)` bit for bit, including its pass order."""

from __future__ import annotations

import gc

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate.signals.phash import pixel_view
from curate.signals.resize import coeffs, luma, luma_resize32, resize32, resize32_packed, vertical_first, weights


def pillow(a: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.LANCZOS))


def test_every_small_size_equals_pillow():
    rng = np.random.default_rng(0)
    for w in range(1, 70):
        for h in range(1, 70, 3):
            a = rng.integers(0, 256, (h, w), dtype=np.uint8)
            assert np.array_equal(resize32(a), pillow(a)), (w, h)


def test_pass_order_boundary_equals_pillow():
    # Noise makes the two pass orders disagree, so a wrong order fails here.
    rng = np.random.default_rng(1)
    for w in (33, 40, 64, 100, 150, 256, 333, 512):
        for h in (2 * w - 33, 2 * w - 32, 2 * w - 31, 2 * w - 30):
            for a in (rng.integers(0, 256, (h, w), dtype=np.uint8), rng.integers(0, 256, (w, h), dtype=np.uint8)):
                assert np.array_equal(resize32(a), pillow(a)), a.shape
    assert vertical_first(100, 169) and not vertical_first(100, 168)
    assert vertical_first(5, 40) and not vertical_first(5, 20) and not vertical_first(40, 5)


def test_large_and_odd_sizes_equal_pillow():
    rng = np.random.default_rng(2)
    for w, h in ((1024, 768), (768, 1024), (1500, 1), (1, 1500), (2000, 37), (4000, 3000), (701, 139)):
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
        assert np.array_equal(resize32(a), pillow(a)), (w, h)


def test_weights_rows_sum_to_one_in_fixed_point():
    for n in (1, 7, 32, 33, 500, 1999):
        w = weights(n)
        assert w.shape == (32, n)
        assert np.all(np.abs(w.sum(axis=1) - 2**22) <= n)  # rounding of each weight moves the sum a little


# ---- the fused kernel: Pillow's convert("L") + resize((32, 32), LANCZOS) in one pass ----------------------


def pillow_l32(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L").resize((32, 32), Image.Resampling.LANCZOS))


def kernel(im: Image.Image) -> np.ndarray:
    """The path pHash takes: Pillow's own pixel buffer (no copy), then the fused kernel."""
    return resize32_packed(pixel_view(im))


# Edge shapes: single pixels, strips, sizes below 32 (Pillow upscales), exactly 32, 32 on one side,
# odd sizes, large aspect ratios, and both sides of the pass-order boundary.
EDGE_SIZES = [
    (1, 1), (1, 2), (2, 1), (1, 31), (31, 1), (1, 500), (500, 1), (3, 3), (5, 7), (31, 31), (32, 32),
    (33, 33), (32, 1), (1, 32), (32, 5), (5, 32), (32, 333), (333, 32), (31, 33), (33, 31), (17, 900),
    (900, 17), (2, 2000), (2000, 2), (64, 97), (64, 95), (100, 169), (100, 168), (101, 171), (257, 511),
    (511, 257), (1023, 767), (13, 64), (64, 13),
]


def test_luma_equals_pillow_on_every_colour():
    # All 2**24 RGB colours once, read through the RGB image's own buffer as the kernel reads it.
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([v >> 16, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    im = Image.fromarray(rgb)
    assert np.array_equal(luma(pixel_view(im)), np.asarray(im.convert("L")))


def test_kernel_equals_pillow_on_edge_sizes_rgb_and_l():
    rng = np.random.default_rng(10)
    for w, h in EDGE_SIZES:
        rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        gray = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
        assert np.array_equal(kernel(rgb), pillow_l32(rgb)), ("RGB", w, h)
        assert np.array_equal(kernel(gray), pillow_l32(gray)), ("L", w, h)


def test_kernel_equals_pillow_on_random_sizes():
    rng = np.random.default_rng(11)
    for i in range(300):
        w, h = (int(v) for v in rng.integers(1, 700, 2)) if i % 4 else (int(v) for v in rng.integers(1, 40, 2))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i % 3 == 0:  # smooth content: sums near a rounding boundary are common there
            arr = np.cumsum(arr, axis=1, dtype=np.uint32).astype(np.uint8)
        im = Image.fromarray(arr)
        assert np.array_equal(kernel(im), pillow_l32(im)), (w, h)


def test_packed_inputs_ignore_the_fourth_byte():
    # (h, w, 4) RGBX with a random 4th byte and (h, w, 3) RGB give Pillow's RGB -> L -> 32x32.
    rng = np.random.default_rng(12)
    for w, h in ((40, 30), (1, 77), (200, 450), (32, 32)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pad = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        ref = pillow_l32(Image.fromarray(rgb))
        assert np.array_equal(luma_resize32(rgb), ref)
        assert np.array_equal(luma_resize32(np.concatenate([rgb, pad], axis=-1)), ref)
        assert np.array_equal(luma_resize32(rgb[..., 0]), pillow_l32(Image.fromarray(rgb[..., 0])))


def test_pixel_view_shares_pillow_memory_and_outlives_the_image():
    im = Image.new("RGB", (50, 40), (1, 2, 3))
    view = pixel_view(im)
    assert view.dtype == np.uint32 and view.shape == (40, 50)
    im.putpixel((7, 5), (200, 100, 50))
    assert view[5, 7] & 0xFFFFFF == 200 | 100 << 8 | 50 << 16  # same buffer: no copy was made
    gray = Image.fromarray(np.full((30, 20), 9, np.uint8))
    gview = pixel_view(gray)
    del im, gray
    gc.collect()
    assert (view[0, 0] & 0xFFFFFF) == 1 | 2 << 8 | 3 << 16 and (gview == 9).all()


def test_images_in_several_blocks_take_the_copy_and_stay_exact():
    # Pillow refuses its Arrow export for images stored in several memory blocks (large images).
    rng = np.random.default_rng(13)
    old = Image.core.get_block_size()
    Image.core.set_block_size(4096)
    try:
        for shape in ((120, 90, 3), (90, 120)):
            im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).copy()  # into Pillow's blocks
            with pytest.raises(ValueError):
                pa.array(im)
            assert np.array_equal(kernel(im), pillow_l32(im)), shape
    finally:
        Image.core.set_block_size(old)


def test_kernel_rejects_what_it_cannot_read():
    for bad in (np.zeros((4, 4), np.int16), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 5), np.uint8),
                np.zeros((4, 4, 3), np.float32)):
        with pytest.raises(ValueError):
            luma_resize32(bad)
    with pytest.raises(ValueError):  # uint32 is the kernel's RGBX form, never an "L" array
        resize32(np.zeros((4, 4), np.uint32))


def test_rounding_ties_in_each_pass():
    # Random pixels almost never put a sum exactly halfway between two outputs, where the +2**21 of
    # Pillow's rounding decides. An impulse of 128 on a weight of 2**14 times an odd number does:
    # 128 * w = 2**21 * odd. Width 81 has such a weight (output 2, input 6); used as a row and a column.
    ties = [(n, int(s[xx]) + j) for n in range(33, 120) for s, c, k in [coeffs(n)] for xx in range(32)
            for j in range(int(c[xx])) if k[xx, j] > 0 and (128 * int(k[xx, j])) % (1 << 22) == 1 << 21]
    assert (81, 6) in ties
    for n, i in ties:
        row = np.zeros((32, n), np.uint8)
        row[:, i] = 128
        for a in (row, row.T):
            for im in (Image.fromarray(a), Image.fromarray(np.repeat(a[..., None], 3, axis=-1))):
                assert np.array_equal(kernel(im), pillow_l32(im)), (n, i, a.shape, im.mode)
