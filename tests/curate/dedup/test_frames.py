"""The dataframe job's pieces (curate.dedup.frames) in plain pandas: the block-key join gives exactly the
brute-force pairs, and the star rounds give the same components as scipy."""

import numpy as np
import pandas as pd
import pytest

from curate.dedup import frames as fr
from curate.dedup.groups import group_ids
from curate.dedup.hamming import brute_force_pairs
from tests.curate.dedup.synth import planted_hashes


def _join_pairs(values, d, plan=None):
    nodes = pd.DataFrame({"node": np.arange(len(values), dtype=np.int64), "h": values.view(np.int64)})
    plan = plan or fr.join_plan(len(values), d)
    flips = fr.explode_tables(plan)
    joined = fr.explode(nodes, flips["left"]).merge(fr.explode(nodes, flips["right"]), on=["b", "z"], suffixes=("_l", "_r"))
    e = fr.keep_edges(joined, plan)
    return sorted(zip(e.u.tolist(), e.v.tolist()))


@pytest.mark.parametrize("d", [0, 1, 2, 4, 5, 8, 11])
def test_block_key_join_equals_brute_force(d):
    values, _ = planted_hashes(500, 60, d, seed=d)
    values = np.unique(values)
    got = _join_pairs(values, d)
    i, j, _ = brute_force_pairs(values, d)
    assert got == sorted(zip(i.tolist(), j.tolist()))  # no pair missed, none twice


def test_join_plan_is_a_valid_cover_and_radii_up_to_4_are_canonical():
    for n in (10, 10_000, 10_000_000):
        for d in range(0, 16):
            plan = fr.join_plan(n, d)
            assert sum(b.nbits for b in plan.blocks) == 64 and all(b.nbits <= 32 for b in plan.blocks)
            assert sum(b.radius + 1 for b in plan.blocks) >= d + 1
    from curate.dedup.hamming import Block, Plan

    values, _ = planted_hashes(300, 40, 9, seed=3)
    values = np.unique(values)
    plan = Plan(9, (Block(32, 32, 4), Block(0, 32, 4)))  # radius 4: halves 2 + 2, two canonical steps
    i, j, _ = brute_force_pairs(values, 9)
    assert _join_pairs(values, 9, plan) == sorted(zip(i.tolist(), j.tolist()))


def test_lowest_bits():
    d = np.array([0, 0b1, 0b1100, 0b1011010, 0b111], np.int64)
    assert fr.lowest_bits(d, 2).tolist() == [0, 0b1, 0b1100, 0b1010, 0b11]
    assert fr.lowest_bits(d, np.array([0, 1, 1, 3, 5])).tolist() == [0, 0b1, 0b100, 0b11010, 0b111]


def _stars(edges):
    """The Dask job's rounds on one partition."""
    while True:
        sym = fr.both_ends(edges)
        new = fr.distinct_edges(fr.large_star(sym))
        new = fr.distinct_edges(fr.small_star(fr.orient(new)))
        both = pd.concat([new.assign(side=0), edges.assign(side=1)])
        if int(fr.count_unmatched(both).iloc[0]) == 0:
            return new
        edges = new


def test_star_rounds_find_the_components():
    rng = np.random.default_rng(0)
    n = 400
    # chains (long paths, the slow case), random edges, and isolated nodes
    chain = [(k, k + 1) for k in range(0, 120)]
    rand = [tuple(sorted(rng.choice(np.arange(150, 400), 2, replace=False))) for _ in range(180)]
    u, v = np.array([a for a, _ in chain + rand]), np.array([b for _, b in chain + rand])
    stars = _stars(pd.DataFrame({"u": u, "v": v}))
    label = np.arange(n)
    label[stars.u.to_numpy()] = stars.v.to_numpy()
    np.testing.assert_array_equal(label, group_ids(n, u, v))
    assert (stars.u > stars.v).all() and stars.u.is_unique  # a star: one edge per non-centre node


def test_pick_keepers_matches_keep_representatives():
    from curate.dedup.groups import keep_representatives

    rng = np.random.default_rng(1)
    group = rng.integers(0, 30, 200)
    row = np.arange(200)
    group = np.array([row[group == g].min() for g in group])
    score = np.where(rng.random(200) < 0.2, np.nan, rng.integers(0, 5, 200).astype(float))  # ties and NaN
    part = pd.DataFrame({"row": row, "uid": [f"u{k}" for k in row], "group": group, "score": score})
    for keep, s in (("first", None), ("highest_clip_score", score)):
        got = fr.pick_keepers(part.sample(frac=1, random_state=0), keep).sort_values("row").keep.to_numpy()
        np.testing.assert_array_equal(got, keep_representatives(group, row, s))
