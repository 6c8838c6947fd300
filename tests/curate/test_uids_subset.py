import hashlib

import numpy as np
import pytest

from curate.demo.metadata import random_uids
from curate.subset import (
    SubsetFileError,
    is_sorted,
    read_subset,
    sort_pairs,
    subset_counts,
    write_subset,
    write_subset_runs,
)
from curate.uids import (
    UID_DTYPE,
    UidError,
    hex_to_pair,
    pairs_to_hex,
    parse_uids,
    uids_to_pairs,
    valid_uid_mask,
)


def test_uid_pairs_match_datacomp_divmod():
    uids = random_uids(np.random.default_rng(1), 500) + ["F" * 32, "0" * 32, "0123456789ABCDEFfedcba9876543210"]
    pairs = uids_to_pairs(uids)
    expected = np.array([divmod(int(u, 16), 2**64) for u in uids], dtype=UID_DTYPE)
    assert np.array_equal(pairs, expected)
    assert pairs_to_hex(pairs) == [u.lower() for u in uids]
    assert hex_to_pair(uids[0]) == tuple(int(x) for x in expected[0])


def test_bad_uids_are_found_not_guessed():
    uids = ["0" * 32, "0" * 31, "g" * 32, None, "0" * 33, " " + "0" * 31]
    assert valid_uid_mask(uids).tolist() == [True, False, False, False, False, False]
    with pytest.raises(UidError, match="000"):
        uids_to_pairs(uids)


def test_subset_roundtrip_is_sorted_and_keeps_repeats(tmp_path):
    pairs = uids_to_pairs(random_uids(np.random.default_rng(2), 100))
    rows = np.concatenate([pairs, pairs[:5]])  # 5 uids listed twice: upsampling
    path = write_subset(tmp_path / "s.npy", rows)
    loaded = read_subset(path)
    assert loaded.dtype == UID_DTYPE and len(loaded) == 105
    assert np.array_equal(loaded, np.sort(rows))
    assert subset_counts(loaded, pairs[:6]).tolist() == [2, 2, 2, 2, 2, 1]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p, np.arange(10, dtype=np.uint64)), "dtype"),
        (lambda p: np.save(p, np.array([(3, 0), (1, 0)], dtype=UID_DTYPE)), "not sorted"),
        (lambda p: np.save(p, np.zeros((2, 2), dtype=UID_DTYPE)), "1-D"),
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "plain numpy"),
        (lambda p: p.write_bytes(b"not a numpy file"), "readable"),
    ],
)
def test_malformed_subset_files_get_clear_errors(tmp_path, make, message):
    path = tmp_path / "bad.npy"
    make(path)
    with pytest.raises(SubsetFileError, match=message):
        read_subset(path)


def test_missing_subset_file(tmp_path):
    with pytest.raises(SubsetFileError, match="not found"):
        read_subset(tmp_path / "nope.npy")


def _random_pairs(rng, n, hi_values=None, lo_values=None):
    pairs = np.empty(n, dtype=UID_DTYPE)
    pairs["f0"] = rng.integers(0, hi_values or 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    pairs["f1"] = rng.integers(0, lo_values or 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    return pairs


@pytest.mark.parametrize("hi_values, lo_values", [(None, None), (40, 3), (1, 5)])
def test_sort_pairs_is_numpys_order(hi_values, lo_values):
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 17, 3000):
        pairs = _random_pairs(rng, n, hi_values, lo_values)
        assert sort_pairs(pairs).tobytes() == np.sort(pairs).tobytes()
        assert is_sorted(sort_pairs(pairs)) and (n < 2 or is_sorted(pairs) == np.array_equal(pairs, np.sort(pairs)))


@pytest.mark.parametrize("hi_values", [None, 50, 1])
def test_subset_from_sorted_runs_is_byte_identical(tmp_path, hi_values):
    """write_subset_runs (each partition's sorted kept uids, merged a chunk of each at a time) writes exactly the file
    write_subset writes for the distinct rows: repeats within and across runs once, empty runs ignored."""
    rng = np.random.default_rng(8)
    for trial in range(12):
        runs = [sort_pairs(_random_pairs(rng, int(rng.integers(0, 2000)), hi_values, 4)) for _ in range(int(rng.integers(0, 6)))]
        if len(runs) > 1 and len(runs[0]):
            runs[1] = sort_pairs(np.concatenate([runs[1], runs[0][:3]]))  # a uid kept in two files
        everything = np.concatenate(runs) if runs else np.zeros(0, UID_DTYPE)
        distinct = np.unique(everything)
        want = write_subset(tmp_path / "want.npy", distinct).read_bytes()
        path, rows, sha = write_subset_runs(tmp_path / "got.npy", runs, buffer_bytes=int(rng.integers(1, 30)) << 14)
        assert path.read_bytes() == want and rows == len(distinct), trial
        assert sha == hashlib.sha256(want).hexdigest()
        assert np.array_equal(read_subset(path), distinct)


def test_parse_uids_in_place_and_copied_columns_agree():
    """Columns whose rows are all 32 bytes are read in place from arrow's buffer; any other column (nulls, other
    lengths, a slice, chunks, large_string) goes through a padded copy: both give the same masks and pairs."""
    import pyarrow as pa

    good = random_uids(np.random.default_rng(3), 300) + ["ABCDEFabcdef0123456789ABCDEFabcd"]
    bad = [None, "", "0" * 31, "0" * 33, "g" * 32, "é" + "0" * 30, "0" * 31 + "\x00", "0" * 16 + " " + "0" * 15]
    columns = [pa.array(good), pa.array(good).slice(5, 100), pa.array(good + bad), pa.array(bad + good, pa.large_string()),
               pa.chunked_array([pa.array(good[:7]), pa.array(bad + good)]), pa.array(good + bad).slice(3)]
    for col in columns:
        values = col.to_pylist()
        mask, pairs = parse_uids(col)
        for i, u in enumerate(values):
            ok = u is not None and len(u.encode()) == 32 and all(c in "0123456789abcdefABCDEF" for c in u)
            assert mask[i] == ok, (i, u)
            assert tuple(int(x) for x in pairs[i]) == (hex_to_pair(u) if ok else (0, 0))
