"""The threshold's later radix passes find a bin's rows by value (curate.rank._in_bin) before keying them: the
mask must hold every row whose key starts with the prefix, at bin edges, zeros of both signs and infinities."""

import numpy as np
import pytest

from curate.rank import BITS_PER_PASS, _in_bin, descending_keys

EDGES = [0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1.0, -1.0, 0.5, 3.4e38, -3.4e38, 1e-300, 2.0**-126]


@pytest.mark.parametrize("bits,dtype", [(32, np.float32), (64, np.float64)])
def test_bin_mask_holds_every_row_of_the_prefix(bits, dtype):
    rng = np.random.default_rng(11)
    raw = rng.integers(0, 2**bits, 4000, dtype=np.uint64).astype(np.uint32 if bits == 32 else np.uint64)
    values = np.concatenate([raw.view(dtype), np.array(EDGES, dtype=dtype), rng.random(500).astype(dtype)])
    values = values[~np.isnan(values)]
    keys = descending_keys(values, bits)
    for level in range(1, bits // BITS_PER_PASS):
        shift = np.uint64(bits - BITS_PER_PASS * level) if bits == 64 else np.uint32(bits - BITS_PER_PASS * level)
        for prefix in {int(p) for p in (keys >> shift)[::37]} | {int(k >> shift) for k in descending_keys(np.array(EDGES, dtype), bits)}:
            want = (keys >> shift) == prefix
            mask = _in_bin(values, bits, level, prefix)
            assert not (want & ~mask).any(), (level, hex(prefix), values[want & ~mask][:5])
            assert mask.sum() <= want.sum() + 2 * (values == 0).sum()  # a superset only by the other zero
