"""The exact Hamming search against brute force: same pairs, same distances, same groups."""

import numpy as np
import pytest

from curate.dedup.groups import group_ids
from curate.dedup.hamming import (brute_force_pairs, chance_pairs, cross_pairs, make_plan, near_pairs, parse_hex64,
                                  safe_distance)
from tests.curate.dedup.synth import planted_hashes, reference_groups


def _sorted(i, j, d):
    o = np.lexsort((j, i))
    return i[o], j[o], d[o]


@pytest.mark.parametrize("max_distance", [0, 1, 2, 3, 4, 6, 8, 10, 13])
def test_pairs_equal_brute_force(max_distance):
    values, _ = planted_hashes(1500, 120, max_distance, seed=max_distance)
    values = np.concatenate([values, values[:7]])  # exact repeats too
    got = near_pairs(values, max_distance)
    want = _sorted(*brute_force_pairs(values, max_distance))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_planted_clusters_and_chains_are_grouped_transitively():
    d = 8
    values, planted = planted_hashes(3000, 90, d, seed=5)
    i, j, _ = near_pairs(values, d)
    groups = group_ids(len(values), i, j)
    np.testing.assert_array_equal(groups, reference_groups(values, d))
    for members in planted:  # every planted cluster, chains included, lands in one group
        assert len(set(groups[members])) == 1
    chains = [m for k, m in enumerate(planted) if k % 3 == 0]
    a, c = values[chains[0][0]], values[chains[0][2]]
    assert np.bitwise_count(a ^ c) > d  # the chain's ends are not a pair, yet share a group


def test_plan_is_a_valid_pigeonhole_cover():
    for n in (10, 10_000, 1_000_000, 100_000_000):
        for d in range(0, 20):
            plan = make_plan(n, d)
            assert sum(b.nbits for b in plan.blocks) == 64
            assert sum(b.radius + 1 for b in plan.blocks) >= d + 1
            assert all(b.nbits <= 22 for b in plan.blocks)


def _assert_cross_equals_brute_force(query, base, d_max):
    a, b, d = cross_pairs(query, base, d_max)
    dist = np.bitwise_count(query[:, None] ^ base[None, :])
    ra, rb = np.nonzero(dist <= d_max)
    np.testing.assert_array_equal(a, ra)
    np.testing.assert_array_equal(b, rb)
    np.testing.assert_array_equal(d, dist[ra, rb])


def test_cross_pairs_equal_brute_force():
    rng = np.random.default_rng(3)
    base, _ = planted_hashes(2000, 50, 6, seed=3)
    query = np.concatenate([rng.integers(0, 2**64, 300, dtype=np.uint64), base[::37] ^ np.uint64(0b1011), base[:3]])
    _assert_cross_equals_brute_force(query, base, 6)


def test_parse_hex64_flags_malformed():
    values, valid = parse_hex64(["0123456789abcdef", None, "xyz", "0123456789ABCDEg", "FFFFFFFFFFFFFFFF", "0123456789abcdef0"])
    assert valid.tolist() == [True, False, False, False, True, False]
    assert int(values[0]) == 0x0123456789ABCDEF and int(values[4]) == 2**64 - 1


def _clustered(n, seed, shared_bits=40):
    """Hashes that share most of their high bits with a few prototypes: buckets hold many hashes, so the
    later-member pass, the same-bucket pairs and 16-bit+ bucket counts all get exercised."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 2**64, 6, dtype=np.uint64)
    high = ~np.uint64((1 << (64 - shared_bits)) - 1)
    values = (protos[rng.integers(0, len(protos), n)] & high) | (rng.integers(0, 2**64, n, dtype=np.uint64) & ~high)
    flips = rng.integers(0, 64, (n, 2)).astype(np.uint64)
    values ^= np.where(rng.random(n) < 0.3, np.uint64(1) << flips[:, 0], np.uint64(0))
    return values


@pytest.mark.parametrize("max_distance,shared,n", [(3, 40, 1200), (8, 30, 1200), (12, 52, 2400)])
def test_dense_buckets_equal_brute_force(max_distance, shared, n):
    values = _clustered(n, seed=max_distance, shared_bits=shared)  # 2400 over 6 prototypes: buckets of 256+
    got = near_pairs(values, max_distance)
    want = _sorted(*brute_force_pairs(values, max_distance))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("widths,radii", [((16, 16, 16, 16), (2, 1, 1, 1)), ((22, 21, 21), (3, 2, 1)), ((8,) * 8, (1, 0, 0, 0, 0, 0, 0, 0))])
def test_any_valid_plan_gives_the_brute_force_pairs(widths, radii):
    from curate.dedup.hamming import Block, Plan, distinct_pairs

    d = sum(t + 1 for t in radii) - 1
    blocks, shift = [], 64
    for w, t in zip(widths, radii):
        shift -= w
        blocks.append(Block(shift, w, t))
    values = np.unique(np.concatenate([planted_hashes(900, 60, d, seed=7)[0], _clustered(600, seed=8, shared_bits=36)]))
    got = distinct_pairs(values, d, plan=Plan(d, tuple(blocks)))
    want = _sorted(*brute_force_pairs(values, d))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_cross_pairs_with_the_larger_side_as_query():
    base, _ = planted_hashes(300, 20, 5, seed=12)
    query = np.concatenate([_clustered(2500, seed=13, shared_bits=34), base[::5] ^ np.uint64(0b10001), base[:4], base[:4]])
    _assert_cross_equals_brute_force(query, base, 5)


def test_empty_and_tiny_inputs():
    e = np.zeros(0, np.uint64)
    for out in (near_pairs(e, 4), cross_pairs(e, e, 4), cross_pairs(np.array([1], np.uint64), e, 4)):
        assert all(len(x) == 0 for x in out)
    i, j, d = near_pairs(np.array([5, 5, 7], np.uint64), 1)
    assert list(zip(i.tolist(), j.tolist(), d.tolist())) == [(0, 1, 0), (0, 2, 1), (1, 2, 1)]


@pytest.mark.parametrize("slots", [1, 2, 4, 16])
def test_table_width_does_not_change_the_pairs(slots):
    from curate.dedup.hamming import distinct_pairs

    values = np.unique(np.concatenate([_clustered(1500, seed=20, shared_bits=34), planted_hashes(800, 50, 7, seed=21)[0]]))
    got = distinct_pairs(values, 7, slots=slots)
    want = _sorted(*brute_force_pairs(values, 7))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_chance_pairs_is_what_uniform_random_hashes_show():
    """Expected pairs within D among n uniform hashes, against brute force on 2,000 random hashes at D = 19 (~1,562
    expected; each of 5 seeds within 5 sigma of it, their mean within 3 sigma/sqrt(5)); and its growth as n²."""
    want = chance_pairs(2000, 19)
    assert round(want) == 1562
    counts = []
    for seed in range(5):
        values = np.random.default_rng(seed).integers(0, 2**64, 2000, dtype=np.uint64)
        counts.append(len(brute_force_pairs(values, 19)[0]))
    assert all(abs(c - want) < 5 * want ** 0.5 for c in counts), counts
    assert abs(np.mean(counts) - want) < 3 * want ** 0.5 / 5 ** 0.5, counts
    assert chance_pairs(2000, 64) == 2000 * 1999 / 2  # every pair is within 64 bits
    assert chance_pairs(10**8, 8) / chance_pairs(10**7, 8) == pytest.approx(100, rel=1e-6)
    assert round(chance_pairs(10**8, 8)) == 1390668  # the 100M scale pool's excess over its planted pairs: 1.35M


def test_safe_distance_keeps_chance_pairs_under_the_share():
    assert safe_distance(10**6, 8) == 8  # 139 chance pairs
    assert safe_distance(10**8, 8) == 7  # 1.39M > 1% of 100M
    assert [safe_distance(n, 8) for n in (1_280_000_000, 12_800_000_000)] == [6, 5]  # DataComp large, xlarge
    for n in (10**6, 10**9, 10**11):
        d = safe_distance(n, 12)
        assert chance_pairs(n, d) <= 0.01 * n and (d == 12 or chance_pairs(n, d + 1) > 0.01 * n)


def test_a_crowded_bucket_is_not_held_as_candidate_pairs():
    """4,000 hashes sharing their top 22 bits (one bucket of the plan's first block: ~8M pairs inside it,
    128 MB as position pairs) and random below, with planted neighbours: the pairs inside the bucket are
    dropped on their outside bits as they are compared, so the search allocates no more than it does for
    as many hashes spread over the buckets (the tables of 2^22 buckets are the same), within 16 MiB (a
    3M-hash block group of `xlarge` held 1.6 GB when they were kept to the end). The pairs are brute
    force's, and every compared pair is still counted."""
    import tracemalloc

    from curate.dedup.hamming import Block, Plan, distinct_pairs

    rng = np.random.default_rng(30)
    low = rng.integers(0, 2**42, 3600, dtype=np.uint64)
    near = low[:400] ^ (np.uint64(1) << rng.integers(0, 42, 400).astype(np.uint64))
    low = np.concatenate([low, near])
    plan = Plan(4, (Block(42, 22, 1), Block(21, 21, 1), Block(0, 21, 0)))  # the plan of 10M hashes at D = 4

    def search(values):
        stats: dict = {}
        tracemalloc.start()
        try:
            out = distinct_pairs(values, 4, plan=plan, stats=stats)
            return out, stats, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    crowded = np.unique((np.uint64(0x2B5A3F) << np.uint64(42)) | low)
    spread = np.unique((rng.integers(0, 2**22, len(low), dtype=np.uint64) << np.uint64(42)) | low)
    got, stats, peak = search(crowded)
    _, _, baseline = search(spread)
    want = _sorted(*brute_force_pairs(crowded, 4))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    n = len(crowded)
    assert stats["candidates"] >= n * (n - 1) // 2  # every pair in the bucket was compared
    assert peak < baseline + 16 * 2**20, f"{peak / 2**20:.0f} MiB against {baseline / 2**20:.0f} MiB"
