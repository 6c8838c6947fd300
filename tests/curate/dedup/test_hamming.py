"""The exact Hamming search against brute force: same pairs, same distances, same groups."""

import numpy as np
import pytest

from curate.dedup.groups import group_ids
from curate.dedup.hamming import brute_force_pairs, cross_pairs, make_plan, near_pairs, parse_hex64
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


def test_cross_pairs_equal_brute_force():
    rng = np.random.default_rng(3)
    base, _ = planted_hashes(2000, 50, 6, seed=3)
    query = np.concatenate([rng.integers(0, 2**64, 300, dtype=np.uint64), base[::37] ^ np.uint64(0b1011), base[:3]])
    a, b, d = cross_pairs(query, base, 6)
    dist = np.bitwise_count(query[:, None] ^ base[None, :])
    ra, rb = np.nonzero(dist <= 6)
    np.testing.assert_array_equal(a, ra)
    np.testing.assert_array_equal(b, rb)
    np.testing.assert_array_equal(d, dist[ra, rb])


def test_parse_hex64_flags_malformed():
    values, valid = parse_hex64(["0123456789abcdef", None, "xyz", "0123456789ABCDEg", "FFFFFFFFFFFFFFFF", "0123456789abcdef0"])
    assert valid.tolist() == [True, False, False, False, True, False]
    assert int(values[0]) == 0x0123456789ABCDEF and int(values[4]) == 2**64 - 1
