"""Generated hashes with planted near-duplicate clusters and chains, and pools that carry them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.demo.metadata import generate_metadata


def flip(value: int, bits) -> int:
    for b in bits:
        value ^= 1 << int(b)
    return value


def planted_hashes(n_random: int, n_clusters: int, max_distance: int, seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """Random 64-bit hashes plus clusters: copies within max_distance bits of a seed, and chains a-b-c where
    a~b and b~c are within max_distance but a and c are not. Returns (hashes, planted groups as positions)."""
    rng = np.random.default_rng(seed)
    values = [int(v) for v in rng.integers(0, 2**64, n_random, dtype=np.uint64)]
    groups = []
    for c in range(n_clusters):
        root = int(rng.integers(0, 2**64, dtype=np.uint64))
        members = [len(values)]
        values.append(root)
        if c % 3 == 0 and max_distance > 0:  # a chain: each link max_distance bits from the last, fresh bits each time
            bits = rng.permutation(64)
            cur = root
            for k in range(3):
                cur = flip(cur, bits[k * max_distance:(k + 1) * max_distance])
                members.append(len(values))
                values.append(cur)
        else:
            for _ in range(int(rng.integers(1, 4))):
                members.append(len(values))
                values.append(flip(root, rng.choice(64, int(rng.integers(0, max_distance // 2 + 1)), replace=False)))
        groups.append(members)
    return np.array(values, dtype=np.uint64), groups


def write_phash_pool(root: Path, hashes: list[str | None], files: int = 3, seed: int = 0, status: list[str] | None = None) -> pa.Table:
    """Metadata (with CLIP scores) for len(hashes) rows plus one extra never-downloaded row, and phash
    column files in `files` parts holding the hashes (None = the stage could not hash the image)."""
    n = len(hashes)
    meta = generate_metadata(n + 1, seed=seed, null_rate=0.0)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pq.write_table(meta, root / "metadata" / "00000000.parquet")
    uids = meta.column("uid").to_pylist()[:n]
    status = status or ["ok" if h is not None else "unidentified" for h in hashes]
    d = root / "columns" / "phash"
    d.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, files + 1).astype(int)
    for f in range(files):
        s = slice(bounds[f], bounds[f + 1])
        pq.write_table(pa.table({"uid": pa.array(uids[s], pa.string()), "phash": pa.array(hashes[s], pa.string()),
                                 "status": pa.array(status[s], pa.string())}), d / f"{f:08d}.parquet")
    return meta


def reference_groups(values: np.ndarray, max_distance: int) -> np.ndarray:
    """Group id (smallest member position) by brute force comparison and a plain union-find."""
    n = len(values)
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(n):
        d = np.bitwise_count(values[i] ^ values[i + 1:])
        for j in np.flatnonzero(d <= max_distance) + i + 1:
            a, b = find(i), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)], dtype=np.int64)  # the root is the smallest member: unions keep the smaller root


def planted_embeddings(n_random: int, n_groups: int, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """Random directions plus planted semantic duplicates for eps = 0.01 (cosine > 0.99): near copies (cosine
    ~0.9998) and chains a-b-c at 0, 6 and 12 degrees (a~b and b~c at cosine 0.9945, a and c at 0.978). No
    pair lies within 1e-3 of the threshold. Returns (float32 rows, planted groups as positions)."""
    rng = np.random.default_rng(seed)
    rows = [r for r in rng.normal(size=(n_random, dim))]
    groups = []
    for g in range(n_groups):
        root = rng.normal(size=dim)
        root /= np.linalg.norm(root)
        members = [len(rows)]
        rows.append(root)
        if g % 3 == 0:  # a chain in the plane of root and a random orthogonal direction
            other = rng.normal(size=dim)
            other -= other @ root * root
            other /= np.linalg.norm(other)
            for deg in (6, 12):
                members.append(len(rows))
                rows.append(np.cos(np.radians(deg)) * root + np.sin(np.radians(deg)) * other)
        else:
            for _ in range(int(rng.integers(1, 3))):
                members.append(len(rows))
                rows.append(root + rng.normal(scale=0.02 / np.sqrt(dim), size=dim))
        groups.append(members)
    emb = np.array(rows, np.float32)
    perm = rng.permutation(len(emb))  # planted members spread over the partitions
    where = np.empty(len(emb), np.int64)
    where[perm] = np.arange(len(emb))
    return emb[perm], [sorted(int(where[m]) for m in g) for g in groups]


def write_embedding_pool(root: Path, emb: np.ndarray, sizes: list[int], seed: int = 0, store: tuple[int, ...] = (),
                         null_rows: tuple[int, ...] = ()) -> pa.Table:
    """Metadata partitions of `sizes` rows holding `emb` in order: an .npz beside each parquet (DataComp's
    layout), except partitions in `store`, whose embeddings go to the column store (columns/clip/) with
    `null_rows` (pool rows) null there."""
    from curate.columns import embeddings_to_arrow

    assert sum(sizes) == len(emb)
    meta = generate_metadata(len(emb), seed=seed, null_rate=0.1)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    start = 0
    for p, n in enumerate(sizes):
        part = meta.slice(start, n)
        pq.write_table(part, root / "metadata" / f"{p:08d}.parquet")
        e = emb[start:start + n].astype(np.float16)
        if p in store:
            (root / "columns" / "clip").mkdir(parents=True, exist_ok=True)
            arr = embeddings_to_arrow(e)
            null = np.array([start + k in null_rows for k in range(n)], bool)
            arr = pa.FixedSizeListArray.from_arrays(arr.values, e.shape[1], mask=pa.array(null)) if n else arr
            pq.write_table(pa.table({"uid": part.column("uid"), "l14_img": arr}), root / "columns" / "clip" / f"{p:08d}.parquet")
        else:
            np.savez(root / "metadata" / f"{p:08d}.npz", l14_img=e)
        start += n
    return meta
