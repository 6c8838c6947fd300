"""SemDeDup-style semantic duplicates (Abbas et al. 2023) over CLIP image embeddings.

L2-normalise the embeddings, cluster them with faiss k-means, and within each cluster take every pair
with cosine similarity > 1 - eps (exactly, by a matrix product per cluster); pairs are grouped
transitively. As in SemDeDup, pairs that k-means puts in different clusters are not compared: the method
is exact within clusters and approximate across them (more clusters: faster, a few more misses).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.dedup.groups import group_ids


def within_cluster_pairs(emb: np.ndarray, assign: np.ndarray, min_cosine: float, block: int = 4096):
    """All pairs (i < j) with the same cluster label and cosine > min_cosine (rows of emb unit length)."""
    order = np.argsort(assign, kind="stable")
    bounds = np.flatnonzero(np.diff(assign[order])) + 1
    out_i, out_j = [], []
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        members = np.sort(members)
        e = emb[members]
        for s in range(0, len(members), block):
            sims = e[s:s + block] @ e.T
            a, b = np.nonzero(sims > min_cosine)
            a = a + s
            keep = a < b
            out_i.append(members[a[keep]])
            out_j.append(members[b[keep]])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def cluster(emb: np.ndarray, k: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    import faiss

    k = max(1, min(k, len(emb)))
    if k == 1:
        return np.zeros(len(emb), np.int64)
    km = faiss.Kmeans(emb.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    km.train(emb)
    _, assign = km.index.search(emb, 1)
    return assign[:, 0].astype(np.int64)


def semantic_pairs(emb: np.ndarray, eps: float, clusters: int | None = None, seed: int = 0):
    """Pairs (i < j) of rows of `emb` with cosine > 1 - eps within one k-means cluster."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1)
    k = clusters if clusters is not None else max(1, int(round(len(emb) / 1000)))
    assign = cluster(emb, k, seed)
    return within_cluster_pairs(emb, assign, 1.0 - eps), int(len(np.unique(assign)))


def semantic_groups(pool_root: Path, *, eps: float, clusters: int | None, arch: str, seed: int, stats: dict):
    """(names, sizes, uid, valid, group per valid row) over the pool's partitions."""
    from curate.columns import MissingColumnError, embeddings_to_numpy, read_columns
    from curate.dedup.run import EMBEDDING_COLUMNS, DedupError
    from curate.pool import Pool, PoolError

    col = EMBEDDING_COLUMNS.get(arch)
    if col is None:
        raise DedupError(f"unknown --arch {arch!r}; choose one of {', '.join(EMBEDDING_COLUMNS)}")
    names, sizes, uids, embs, valids = [], [], [], [], []
    for part in Pool(pool_root).partitions():
        try:
            t = read_columns(pool_root, part.path, ["uid", col])
        except (MissingColumnError, PoolError) as e:
            raise DedupError(f"--method semantic needs CLIP image embeddings ({col}): in the .npz beside each metadata "
                             f"parquet (DataComp's layout) or in the column store; {e}") from e
        c = t.column(col)
        ok = np.asarray(c.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        arr = embeddings_to_numpy(c.filter(pa.array(ok))) if ok.any() else None
        names.append(part.name)
        sizes.append(t.num_rows)
        uids.append(t.column("uid"))
        valids.append(ok)
        if arr is not None:
            embs.append(arr.astype(np.float32))
    valid = np.concatenate(valids) if valids else np.zeros(0, bool)
    emb = np.concatenate(embs) if embs else np.zeros((0, 1), np.float32)
    (i, j), k = semantic_pairs(emb, eps, clusters, seed) if len(emb) else ((np.zeros(0, np.int64),) * 2, 0)
    stats.update({"embedding_column": col, "clusters": k, "pairs": int(len(i)), "without_value": int((~valid).sum()), "malformed": 0})
    index = np.flatnonzero(valid)
    group = group_ids(len(emb), i, j, index)
    uid = pa.chunked_array([ch for u in uids for ch in u.cast(pa.string()).chunks], pa.string())
    return names, sizes, uid, valid, group


__all__ = ["semantic_pairs", "within_cluster_pairs"]
