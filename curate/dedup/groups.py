"""From pairs to groups: connected components (transitive: a~b and b~c put a, b, c together) and the
representative each group keeps."""

from __future__ import annotations

import numpy as np


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label (0..C-1, arbitrary order) of each of n nodes joined by edges (i, j)."""
    if n == 0:
        return np.zeros(0, np.int64)
    if len(i) == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(i), np.int8), (np.asarray(i), np.asarray(j))), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return labels.astype(np.int64)


def group_ids(n: int, i: np.ndarray, j: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Per node, the smallest `index` (default: node position) in its component: a deterministic group id."""
    index = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
    comp = components(n, i, j)
    smallest = np.full(int(comp.max()) + 1 if n else 0, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, comp, index)
    return smallest[comp]


def keep_representatives(group: np.ndarray, index: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """One True per group: the member with the smallest index (`first`), or with the highest score
    (missing scores rank last; ties go to the smallest index)."""
    group = np.asarray(group, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    keep = np.zeros(len(group), dtype=bool)
    if not len(group):
        return keep
    if scores is None:
        return group == index
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.lexsort((index, -s, group))  # by group, then best score, then smallest index
    g = group[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    keep[order[first]] = True
    return keep


__all__ = ["components", "group_ids", "keep_representatives"]
