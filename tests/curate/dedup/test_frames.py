"""The dataframe job's pieces (curate.dedup.frames) in plain pandas: the star rounds give the same components
as scipy, and the keep rule the local engine's keepers. (The pHash edge search: test_block_search.py.)"""

import numpy as np
import pandas as pd

from curate.dedup import frames as fr
from curate.dedup.groups import group_ids


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
    chain = [(k, k + 1) for k in range(120)]
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
