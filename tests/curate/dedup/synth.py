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
