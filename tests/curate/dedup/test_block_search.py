"""The exact-block group search of the Dask and Spark jobs (curate.dedup.block_search) against brute force:
every pair within D exactly once, whichever path a group takes (all pairs of small groups, hamming on the
remaining bits, sub-blocks for oversize groups), on planted pairs at D-1, D and D+1, skew and small D."""

import numpy as np
import pandas as pd
import pytest

from curate.dedup import block_search as bs
from curate.dedup.hamming import Block, brute_force_pairs, distinct_pairs, make_plan


def _planted(n: int, d: int, seed: int) -> np.ndarray:
    """Random hashes plus, for each of a few roots, copies at exactly D-1, D and D+1 bits (distinct values)."""
    rng = np.random.default_rng(seed)
    values = list(rng.integers(0, 2**64, n, dtype=np.uint64))
    for _ in range(max(4, n // 20)):
        root = rng.integers(0, 2**64, dtype=np.uint64)
        values.append(root)
        for k in (d - 1, d, d + 1):
            if k >= 0:
                bits = rng.choice(64, k, replace=False).astype(np.uint64)
                values.append(root ^ np.bitwise_or.reduce(np.uint64(1) << bits) if k else root)
    return np.unique(np.array(values, np.uint64))


def _skewed(n: int, seed: int) -> np.ndarray:
    """Many hashes sharing their top 40 bits (the first block's group far above its share), with near copies."""
    rng = np.random.default_rng(seed)
    shared = (np.uint64(0xABCDEF0123) << np.uint64(24)) | rng.integers(0, 2**24, n, dtype=np.uint64)
    near = shared[: n // 3] ^ (np.uint64(1) << rng.integers(0, 24, n // 3).astype(np.uint64))
    return np.unique(np.concatenate([shared, near]))


def _edges(values: np.ndarray, d: int, partitions: int = 1, split: bool = False):
    """What the jobs compute: explode, spread the rows by group over `partitions`, search each; (pairs, summary)."""
    nodes = pd.DataFrame({"node": np.arange(len(values), dtype=np.int64)[::-1].copy(), "h": values[::-1].view(np.int64)})
    ex = bs.explode(nodes, d, split).sample(frac=1, random_state=0)
    outs = [bs.search_partition(ex[ex.g % partitions == k], d) for k in range(partitions)]
    out = pd.concat(outs, ignore_index=True)
    e = out[out.u >= 0]
    got = sorted(zip(e.u.tolist(), e.v.tolist()))  # node k holds values[k] (rows listed in reverse)
    return got, bs.summarize(out[out.u < 0]), e


def _brute(values, d):
    i, j, _ = brute_force_pairs(values, d)
    return sorted(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("d", [0, 1, 2, 3, 4, 5, 8, 11, 22])
def test_every_pair_exactly_once_against_brute_force(d):
    values = _planted(700, d, seed=d)
    got, summary, e = _edges(values, d, partitions=3)
    want = _brute(values, d)
    assert got == want  # sorted lists: a pair found twice would show up twice
    assert (e.u < e.v).all()
    assert summary["block_group_rows"] == len(values) * bs.block_count(d)
    if d >= 1:  # planted copies at exactly D are found, at D + 1 never
        assert any(np.bitwise_count(values[a] ^ values[b]) == d for a, b in got)


@pytest.mark.parametrize("small, oversize", [(1, 10**9), (4, 40), (10**9, 10**9), (2, 25)])
@pytest.mark.parametrize("d", [1, 3, 8])
def test_each_search_path_gives_the_same_pairs(monkeypatch, d, small, oversize):
    """All pairs for every group, hamming for every group, and sub-blocks for big groups agree with brute force,
    on a skewed pool where many hashes share their top 40 bits (a block group far above n / 2^w)."""
    monkeypatch.setattr(bs, "SMALL_GROUP", small)
    monkeypatch.setattr(bs, "MAX_GROUP", oversize)
    values = np.unique(np.concatenate([_planted(600, d, seed=10 + d), _skewed(300, seed=d)]))
    got, summary, _ = _edges(values, d, partitions=2)
    assert got == _brute(values, d)
    assert summary["largest_block_group"] >= 300  # the skewed group is counted
    assert (summary["oversize_block_groups"] > 0) == (oversize < 300)


@pytest.mark.parametrize("d", [2, 3, 5, 8, 11])
@pytest.mark.parametrize("small, oversize", [(512, 4_000_000), (1, 10**9), (2, 6)])
def test_split_groups_give_every_pair_exactly_once(monkeypatch, d, small, oversize):
    """The two-level key (each hash once per block and exact sub-block of the other bits, for pools whose block
    groups would outgrow a task) finds exactly the pairs brute force finds, on every search path inside."""
    monkeypatch.setattr(bs, "SMALL_GROUP", small)
    monkeypatch.setattr(bs, "MAX_GROUP", oversize)
    values = np.unique(np.concatenate([_planted(500, d, seed=30 + d), _skewed(200, seed=d)]))
    got, summary, e = _edges(values, d, partitions=3, split=True)
    assert got == _brute(values, d) and (e.u < e.v).all()
    assert summary["block_group_rows"] == len(values) * bs.block_count(d) * (d + 1)
    plain, plain_summary, _ = _edges(values, d, partitions=3)
    assert plain == got and plain_summary["block_groups"] < summary["block_groups"]


def test_key_table_is_the_block_key_and_the_split_key():
    """One formula for both jobs (numpy here, Spark SQL over the same table): unsplit it is block index << 32 |
    block value; split it packs block, sub-block and both values, distinct per (block, sub-block) kind."""
    rng = np.random.default_rng(3)
    hu = rng.integers(0, 2**64, 1000, dtype=np.uint64)
    for d in (1, 2, 8, 20):
        blocks = bs.exact_blocks(d)
        for i, (kind, blk) in enumerate(zip(bs.key_table(d), blocks)):
            np.testing.assert_array_equal(bs.group_keys(hu, kind), (i << 32) | bs.block_values(hu, blk))
        if d < 2:
            with pytest.raises(ValueError, match="D >= 2"):
                bs.key_table(d, split=True)
            continue
        split = bs.key_table(d, split=True)
        assert len(split) == (d + 1) ** 2
        for kind in split:
            g = bs.group_keys(hu, kind)
            i, j = (g >> bs.SPLIT_BLOCK_SHIFT) & 63, (g >> bs.SPLIT_SUB_SHIFT) & 63
            blk = blocks[int(i[0])]
            sub = bs.exact_blocks(d, 64 - blk.nbits)[int(j[0])]
            assert (g > 0).all() and len(set(i.tolist())) == len(set(j.tolist())) == 1
            np.testing.assert_array_equal((g >> bs.SPLIT_VALUE_SHIFT) & ((1 << 28) - 1), bs.block_values(hu, blk))
            np.testing.assert_array_equal(g & ((1 << 22) - 1), bs.block_values(bs.drop_block(hu, blk), sub))


def test_split_needed_only_past_a_tasks_worth_of_group():
    assert not bs.split_needed(1_280_000_000, 8)  # `large` at D = 8: groups of ~10M rows
    assert bs.split_needed(12_800_000_000, 8)  # `xlarge`: ~100M
    assert not bs.split_needed(10**15, 1)  # 32-bit blocks: never
    assert bs.describe(8, True) == "D=8: 9 exact blocks of 8/7 bits, each group split in 9 exact sub-blocks"


def test_a_partition_of_one_hash_groups_has_no_pairs():
    part = pd.DataFrame({"g": np.array([1, 2, 3 << 32], np.int64), "node": np.array([0, 1, 2], np.int64),
                         "h": np.array([0, -1, 12345], np.int64)})
    out = bs.search_partition(part, 8)
    assert (out.u < 0).all() and bs.summarize(out)["block_groups"] == 3


def test_d0_needs_no_rows_and_finds_nothing():
    values = _planted(200, 0, seed=1)
    nodes = pd.DataFrame({"node": np.arange(len(values), dtype=np.int64), "h": values.view(np.int64)})
    assert len(bs.explode(nodes, 0)) == 0 and bs.block_count(0) == 0
    out = bs.search_partition(bs.explode_meta(), 0)
    assert (out.u < 0).all() and bs.summarize(out)["block_groups"] == 0


def test_exact_blocks_cover_the_bits_and_drop_block_keeps_distances():
    for bits in (64, 57, 20):
        for d in range(0, 20):
            blocks = bs.exact_blocks(d, bits)
            assert len(blocks) == min(d + 1, bits)
            assert sum(b.nbits for b in blocks) == bits and blocks[-1].shift == 0
            assert all(a.shift == b.shift + b.nbits for a, b in zip(blocks, blocks[1:]))
    rng = np.random.default_rng(0)
    blk = Block(20, 7, 0)
    v = (rng.integers(0, 2**64, 1000, dtype=np.uint64) & ~np.uint64(0x7F << 20)) | np.uint64(0x55 << 20)
    dropped = bs.drop_block(v, blk)
    assert int(dropped.max()) < 2**57
    np.testing.assert_array_equal(np.bitwise_count(dropped[1:] ^ dropped[:-1]), np.bitwise_count(v[1:] ^ v[:-1]))


def test_first_equal_block():
    blocks = bs.exact_blocks(3)  # 4 blocks of 16 bits
    x = np.array([0, 1 << 63, (1 << 63) | (1 << 40) | (1 << 20), (1 << 63) | (1 << 40) | (1 << 20) | 1], np.uint64)
    assert bs.first_equal_block(x, blocks).tolist() == [0, 1, 3, 4]


@pytest.mark.parametrize("bits", [57, 50, 40])
def test_hamming_search_on_fewer_bits_equals_brute_force(bits):
    """hamming's plan over `bits` bits (what a group search uses): same pairs as brute force."""
    rng = np.random.default_rng(bits)
    v = rng.integers(0, 2**bits, 1500, dtype=np.uint64)
    v = np.unique(np.concatenate([v, v[:200] ^ (np.uint64(1) << rng.integers(0, bits, 200).astype(np.uint64)),
                                  v[:100] ^ np.uint64(0b10110111)]))
    plan = make_plan(len(v), 8, bits=bits)
    assert plan.bits == bits and sum(b.nbits for b in plan.blocks) == bits
    i, j, _ = distinct_pairs(v, 8, plan=plan)
    assert sorted(zip(i.tolist(), j.tolist())) == _brute(v, 8)
    with pytest.raises(ValueError, match="higher bits"):
        distinct_pairs(v | np.uint64(1 << 63), 8, plan=plan)
