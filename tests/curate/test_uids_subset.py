import numpy as np
import pytest

from curate.subset import SubsetFileError, read_subset, subset_counts, write_subset
from curate.uids import UID_DTYPE, UidError, hex_to_pair, pairs_to_hex, uids_to_pairs, valid_uid_mask
from curate.demo.metadata import random_uids


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
