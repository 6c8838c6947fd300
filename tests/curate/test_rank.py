import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.engines import LocalEngine
from curate.rank import descending_keys, key_to_float, value_at_descending_rank


def _write(tmp_path, arrays, dtype):
    paths = []
    for i, a in enumerate(arrays):
        p = tmp_path / f"{i}.parquet"
        pq.write_table(pa.table({"s": pa.array(a.astype(dtype), from_pandas=True)}), p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radix_select_equals_full_sort(tmp_path, dtype):
    rng = np.random.default_rng(3)
    parts = [rng.normal(0.2, 0.3, n) for n in (5000, 1, 0, 3000)]
    parts[0][:100] = 0.25  # ties
    parts[0][100:150] = np.nan  # missing scores
    parts[3][:10] = -0.0
    parts[3][10:20] = 0.0
    parts[3][20:30] = -1e30
    paths = _write(tmp_path, parts, dtype)
    allv = np.concatenate([p.astype(dtype) for p in parts]).astype(np.float64)
    with LocalEngine(1) as engine:
        for f in (1e-4, 0.01, 0.1, 0.3, 0.5, 0.9, 0.99, 0.995, 1.0):
            n = int(len(allv) * f)
            want = -np.sort(-allv)[n] if n < len(allv) else np.nan
            got, rank, total = value_at_descending_rank(engine, paths, "s", f)
            assert total == len(allv) and rank == n
            assert (np.isnan(want) and np.isnan(got)) or want == got, (f, want, got)


def test_keys_order_floats_descending():
    v = np.array([3.5, -2.0, 0.0, 1e-300, -1e-300, np.inf, -np.inf, 7.0])
    keys = descending_keys(v)
    assert np.array_equal(v[np.argsort(keys, kind="stable")], -np.sort(-v))
    assert [key_to_float(int(k)) for k in keys] == v.tolist()


class CountingEngine(LocalEngine):
    """Counts the passes (engine.imap_unordered calls: each pass folds the histograms as they arrive) a rank takes."""

    def __init__(self):
        super().__init__(1)
        self.maps = 0

    def imap_unordered(self, fn, items, desc=None):
        self.maps += 1
        return super().imap_unordered(fn, items, desc)


@pytest.mark.parametrize("kinds, passes", [(("f32", "f32"), 2), (("f64", "f64"), 4), (("f32", "f64"), 5),
                                           (("f32", "f64-of-f32"), 2)])
def test_float32_scores_take_two_passes_and_the_same_answer(tmp_path, kinds, passes):
    """DataComp's scores are float32: 32-bit keys fix them in two passes; one partition with a value float32 cannot
    hold sends the whole pool through the 64-bit passes (its float32 partitions redo the first). A float64 column
    holding only float32 values is float32."""
    rng = np.random.default_rng(9)
    arrays = []
    for i, kind in enumerate(kinds):
        v = rng.normal(0.25, 0.05, 3000)
        v[:50] = np.nan
        v[50:80] = 0.25
        arrays.append(pa.array(v.astype(np.float32) if kind == "f32" else
                               (v.astype(np.float32).astype(np.float64) if kind == "f64-of-f32" else v), from_pandas=True))
    paths = []
    for i, a in enumerate(arrays):
        pq.write_table(pa.table({"s": a}), tmp_path / f"{i}.parquet")
        paths.append(str(tmp_path / f"{i}.parquet"))
    allv = np.concatenate([a.to_numpy(zero_copy_only=False).astype(np.float64) for a in arrays])
    for f in (0.01, 0.3, 0.9):
        engine = CountingEngine()
        got, _, total = value_at_descending_rank(engine, paths, "s", f)
        assert got == -np.sort(-allv)[int(len(allv) * f)] and total == len(allv)
        assert engine.maps == passes


@pytest.mark.parametrize("bits, dtype", [(32, np.float32), (64, np.float64)])
def test_keys_round_trip_at_both_widths(bits, dtype):
    v = np.array([3.5, -2.0, 0.0, 1e-30, -1e-30, np.inf, -np.inf, 7.0, 0.25], dtype=dtype)
    keys = descending_keys(v, bits)
    assert keys.dtype == (np.uint32 if bits == 32 else np.uint64)
    assert np.array_equal(v[np.argsort(keys, kind="stable")], -np.sort(-v))
    assert [key_to_float(int(k), bits) for k in keys] == v.astype(np.float64).tolist()
