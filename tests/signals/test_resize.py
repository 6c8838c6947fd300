"""resize32 equals Pillow's `resize((32, 32), LANCZOS)` on "L" images, including its pass order."""

from __future__ import annotations

import numpy as np
from PIL import Image

from curate.signals.resize import resize32, vertical_first, weights


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
