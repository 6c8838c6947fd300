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
