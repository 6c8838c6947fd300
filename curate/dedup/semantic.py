"""SemDeDup-style semantic duplicates (Abbas et al. 2023) over CLIP image embeddings.

L2-normalise the embeddings, cluster them with faiss k-means, and within each cluster take every pair
with cosine similarity > 1 - eps (exactly, by a matrix product per cluster); pairs are grouped
transitively. As in SemDeDup, pairs that k-means puts in different clusters are not compared: the method
is exact within clusters and approximate across them (more clusters: faster, a few more misses).

The steps, identical on every engine so that every engine writes the same groups:

1. k (`--clusters`, default pool rows / 1000) and a training sample: `sample_rows` draws
   `sample_size(rows, k)` row numbers (rows numbered over the pool's partitions in order) with the seed,
   from the footers' row counts alone; sampled rows without a usable embedding are dropped. The sample is
   256 rows per centroid (faiss's own per-centroid cap, so faiss never subsamples again), at most
   MAX_SAMPLE rows, but no fewer than 39 per centroid (faiss's floor) while the pool has them. As in
   SemDeDup and DataComp's image_based baseline, the centroids come from a bounded sample, trained in the
   driver; only the sample and the centroids ever sit there.
2. each partition's rows go to their nearest centroid (`assign`, inner product of unit vectors), one
   partition at a time (on Dask and Spark: one task per partition, centroids broadcast).
3. per cluster, members sorted by row, `within_cluster_pairs`. Products in steps 2 and 3 are float64 of
   float32 rows, so BLAS thread counts (one per Dask or Spark worker, several here) cannot change a
   cluster or move a pair across the threshold; only a cosine within ~1e-13 of 1 - eps could.
4. connected components (locally scipy; on Dask and Spark the star rounds of curate.dedup.frames), keep
   rule, output: as for pHash.

Rows whose embedding is null or missing are not grouped (`without_value`); a row whose embedding has a
non-finite value or is all zero is `malformed` and not grouped either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.dedup.frames import STR, ColumnFile, write_empty_files
from curate.dedup.groups import group_ids
from curate.dedup.names import DedupError, embedding_column

POINTS_PER_CENTROID = 256  # faiss's max_points_per_centroid: more is subsampled away by faiss itself
MIN_POINTS_PER_CENTROID = 39  # faiss's min_points_per_centroid: fewer and it warns
MAX_SAMPLE = 1_000_000  # training rows held by the driver (1M x 768 float32 = 3 GB)
NITER = 20


def default_clusters(rows: int) -> int:
    return max(1, int(round(rows / 1000)))


def sample_size(rows: int, k: int) -> int:
    return min(rows, max(min(k * POINTS_PER_CENTROID, MAX_SAMPLE), k * MIN_POINTS_PER_CENTROID))


def sample_rows(rows: int, k: int, seed: int) -> np.ndarray:
    """Sorted row numbers of the k-means training sample (a function of the pool size, k and the seed only)."""
    size = sample_size(rows, k)
    if size >= rows:
        return np.arange(rows, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(rows, size, replace=False)).astype(np.int64)


def normalise(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows as float32, usable mask): a row is usable when all its values are finite and not all zero."""
    emb = np.asarray(emb, dtype=np.float32)
    finite = np.isfinite(emb).all(axis=1) if emb.ndim == 2 else np.zeros(len(emb), bool)
    norms = np.linalg.norm(np.where(finite[:, None], emb, 0), axis=1)
    ok = finite & (norms > 0)
    return emb[ok] / norms[ok, None], ok


def train(sample: np.ndarray, k: int, seed: int, niter: int = NITER) -> np.ndarray:
    """Spherical k-means centroids (at most len(sample) of them) of unit rows."""
    k = max(1, min(k, len(sample)))
    if k == 1:
        return np.zeros((1, sample.shape[1]), np.float32)
    import faiss

    km = faiss.Kmeans(sample.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    km.train(np.ascontiguousarray(sample, dtype=np.float32))
    return np.asarray(km.centroids, np.float32)


BLOCK_VALUES = 1 << 24  # float64 similarities per matrix product (128 MB)


def assign(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (largest inner product, first on ties) of each unit row, in float64 (see
    `within_cluster_pairs`), a block of rows at a time."""
    if len(centroids) == 1 or not len(emb):
        return np.zeros(len(emb), np.int64)
    if emb.shape[1] != centroids.shape[1]:
        raise DedupError(f"embeddings of width {emb.shape[1]} do not match the centroids' width {centroids.shape[1]}")
    c = centroids.astype(np.float64).T
    step = max(1, BLOCK_VALUES // len(centroids))
    return np.concatenate([np.argmax(emb[s:s + step].astype(np.float64) @ c, axis=1) for s in range(0, len(emb), step)]).astype(np.int64)


def within_cluster_pairs(emb: np.ndarray, assign: np.ndarray, min_cosine: float):
    """All pairs (i < j) with the same cluster label and cosine > min_cosine (rows of emb unit length).

    Products are taken in float64: a product of two float32 values is exact there, so a cosine no longer
    depends (beyond ~1e-13) on how BLAS splits and orders its sums, which changes with its thread count: a
    Dask or Spark worker (one BLAS thread) and this process (several) find the same pairs. In float32 the
    last bits did change, enough to move a pair across the threshold."""
    order = np.argsort(assign, kind="stable")
    bounds = np.flatnonzero(np.diff(assign[order])) + 1
    out_i, out_j = [], []
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        members = np.sort(members)
        e = emb[members].astype(np.float64)
        block = max(1, BLOCK_VALUES // len(members))
        for s in range(0, len(members), block):
            sims = e[s:s + block] @ e[s:].T  # the upper triangle's rows s.. against columns s..
            a, b = np.nonzero(sims > min_cosine)
            keep = a < b
            out_i.append(members[a[keep] + s])
            out_j.append(members[b[keep] + s])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


# --- inputs ----------------------------------------------------------------------------------------------


def _npz_rows(npz, col: str) -> int | None:
    """Rows of `col` in an .npz (a local file or an object), from the array header only (None when the npz
    lacks it)."""
    import zipfile

    from curate import storage

    with storage.open_file(npz, "rb") as f, zipfile.ZipFile(f) as z:
        if f"{col}.npy" not in z.namelist():
            return None
        with z.open(f"{col}.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read(f)
    return int(shape[0]) if shape else 0


def list_partitions(pool_root: Path, col: str) -> list:
    """The pool's partitions as curate.dedup.frames.ColumnFile (row offsets from parquet footers), after
    checking that each has `col` (in its parquet, its .npz with as many rows, or the column store), so
    that workers do not find out one by one."""
    from curate import storage
    from curate.columns import find_store_signal
    from curate.pool import Pool, PoolError, partition_num_rows, partition_schema

    hint = (f"--method semantic needs CLIP image embeddings ({col}): in the .npz beside each metadata parquet "
            "(DataComp's layout) or in the column store")
    try:
        parts = Pool(pool_root).partitions()
    except PoolError as e:
        raise DedupError(f"{hint}; {e}") from e
    stored = None
    out, offset = [], 0
    for i, p in enumerate(parts):
        try:
            names = partition_schema(p.path).names
            n = partition_num_rows(p.path)
        except PoolError as e:
            raise DedupError(str(e)) from e
        if "uid" not in names:
            raise DedupError(f"{p.path}: column 'uid' is missing")
        if col not in names:
            npz = storage.path(p.path).with_suffix(".npz")
            rows = _npz_rows(npz, col) if npz.exists() else None
            if rows is None:
                stored = stored or find_store_signal(str(pool_root), col)
                if stored is None:
                    raise DedupError(f"{hint}; {p.path} has neither")
            elif rows != n:
                raise DedupError(f"{npz}: holds {rows} rows of {col!r}, {p.path} has {n}")
        out.append(ColumnFile(i, p.path, offset, n))
        offset += n
    return out


def read_embeddings(pool_root: str, f, col: str):
    """One partition: (uid, present, usable, unit embeddings of the usable rows, reason per malformed row)."""
    from curate.columns import MissingColumnError, embeddings_to_numpy, read_columns
    from curate.pool import PoolError

    try:
        t = read_columns(pool_root, f.path, ["uid", col])
    except (MissingColumnError, PoolError) as e:
        raise DedupError(f"--method semantic needs CLIP image embeddings ({col}): {e}") from e
    if t.num_rows != f.rows:
        raise DedupError(f"{f.path}: read {t.num_rows} rows, its footer says {f.rows}")
    c = t.column(col)
    if not pa.types.is_fixed_size_list(c.type):
        raise DedupError(f"{f.path}: column {col!r} is {c.type}, not a fixed-size list of numbers (one embedding per row)")
    present = np.asarray(c.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    dense = embeddings_to_numpy(c) if len(c) else np.zeros((0, c.type.list_size), np.float32)
    unit, ok = normalise(dense)
    usable = present & ok
    emb = unit[usable[ok]]
    reason = np.full(len(present), None, object)
    bad = present & ~usable
    finite = np.isfinite(np.asarray(dense[bad], np.float32)).all(axis=1)
    reason[np.flatnonzero(bad)] = np.where(finite, "zero vector", "non-finite values")
    return t.column("uid").cast(pa.string()), present, usable, emb, reason


# --- per-partition steps of the Dask and Spark jobs (curate.dedup.dask_job, curate.dedup.spark_job) --------

ROW_SCHEMA = "row long, file int, uid string, present boolean, valid boolean, sampled boolean, bad string, emb binary"


def pack(emb: np.ndarray, valid: np.ndarray):
    """Unit rows as one binary value per row (float32 bytes; empty where not valid), as a pandas column;
    large_binary (64-bit offsets), since a partition may hold more than 2 GiB of embeddings."""
    import pandas as pd

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    width = emb.shape[1] * 4 if emb.ndim == 2 else 0
    offsets = np.zeros(len(valid) + 1, np.int64)
    np.cumsum(np.where(valid, width, 0), out=offsets[1:])
    arr = pa.Array.from_buffers(pa.large_binary(), len(valid), [None, pa.py_buffer(offsets), pa.py_buffer(emb.tobytes())])
    return pd.Series(pd.arrays.ArrowExtensionArray(arr))


def unpack(values) -> np.ndarray:
    """pack's column (pandas, arrow or bytes objects; every row the same width) back to an (N, D) float32 array."""
    arr = pa.array(values, pa.large_binary()) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_binary())
    n = len(arr)
    if not n:
        return np.zeros((0, 1), np.float32)
    width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], width)[arr.offset:arr.offset + n + 1]
    widths = np.diff(offsets)
    if widths[0] % 4 or not (widths == widths[0]).all():
        raise ValueError("embedding rows of different widths")
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    return data.view(np.float32).reshape(n, int(widths[0]) // 4)


GROUP_KEYS = ("groups", "groups_with_duplicates", "largest_group", "kept", "rows_grouped", "removed_as_duplicates")


def start_job(files: list, col: str, clusters: int | None, seed: int, staging: Path, stats: dict):
    """The common start of the Dask and Spark semantic jobs: (group column, keep column, k, [(file, its sample
    rows)] for the files with rows), or None when no file has rows (their empty outputs written, `stats` filled)."""
    gcol, kcol = "dedup_semantic_group", "dedup_semantic_keep"
    total = sum(f.rows for f in files)
    k = clusters if clusters is not None else default_clusters(total)
    nonempty = write_empty_files(files, staging, gcol, kcol)
    stats.update({"embedding_column": col, "rows": total, "without_value": 0, "malformed": 0, "kmeans_sample": 0,
                  "clusters": 0, "pairs": 0})
    if not nonempty:
        stats.update(dict.fromkeys(GROUP_KEYS, 0))
        return None
    sample = sample_rows(total, k, seed)
    cuts = np.searchsorted(sample, [f.offset for f in nonempty] + [total])
    return gcol, kcol, k, [(f, sample[a:b]) for f, a, b in zip(nonempty, cuts[:-1], cuts[1:])]


def embedding_rows(f, sample: np.ndarray, pool_root: str, col: str):
    """One partition as the jobs' row frame (ROW_SCHEMA): `sampled` marks the rows of the training sample
    that fall in this partition, `emb` the unit embedding of each usable row."""
    import pandas as pd

    uid, present, valid, emb, reason = read_embeddings(pool_root, f, col)
    sampled = np.zeros(f.rows, bool)
    sampled[np.asarray(sample, np.int64) - f.offset] = True
    return pd.DataFrame({
        "row": np.arange(f.offset, f.offset + f.rows, dtype=np.int64),
        "file": np.full(f.rows, f.index, np.int32),
        "uid": uid.to_pandas().astype(STR),
        "present": present,
        "valid": valid,
        "sampled": sampled,
        "bad": pd.Series(reason, dtype=STR),
        "emb": pack(emb, valid),
    })


def rows_meta():
    import pandas as pd

    return pd.DataFrame({
        "row": pd.Series(dtype="int64"), "file": pd.Series(dtype="int32"), "uid": pd.Series(dtype=STR),
        "present": pd.Series(dtype="bool"), "valid": pd.Series(dtype="bool"), "sampled": pd.Series(dtype="bool"),
        "bad": pd.Series(dtype=STR), "emb": pd.Series(dtype=pd.ArrowDtype(pa.large_binary())),
    })


def training_set(part) -> np.ndarray:
    """The collected sample rows (row, emb), in row order: the same training matrix on every engine."""
    part = part.sort_values("row")
    return unpack(part["emb"]) if len(part) else np.zeros((0, 1), np.float32)


def assign_frame(part, centroids: np.ndarray):
    """Usable rows (row, emb) -> (row, cluster, emb)."""
    import pandas as pd

    cluster = assign(unpack(part["emb"]), centroids) if len(part) else np.zeros(0, np.int64)
    return pd.DataFrame({"row": part["row"].to_numpy(np.int64), "cluster": cluster, "emb": part["emb"].values})


def assigned_meta():
    import pandas as pd

    return pd.DataFrame({"row": pd.Series(dtype="int64"), "cluster": pd.Series(dtype="int64"),
                         "emb": pd.Series(dtype=pd.ArrowDtype(pa.large_binary()))})


def cluster_pairs(part, min_cosine: float):
    """Rows (row, cluster, emb) holding whole clusters -> edges (u, v), u < v, of pairs with cosine > min_cosine.
    Members are sorted by row first, as the local engine has them."""
    import pandas as pd

    if len(part) < 2:
        return pd.DataFrame({"u": pd.Series(dtype="int64"), "v": pd.Series(dtype="int64")})
    part = part.sort_values("row")
    row = part["row"].to_numpy(np.int64)
    i, j = within_cluster_pairs(unpack(part["emb"]), part["cluster"].to_numpy(np.int64), min_cosine)
    return pd.DataFrame({"u": row[i], "v": row[j]})


# --- the local engine ------------------------------------------------------------------------------------


def semantic_groups(pool_root: Path, *, eps: float, clusters: int | None, arch: str, seed: int, stats: dict):
    """(names, sizes, uid, valid, group per valid row) over the pool's partitions, in this process."""
    col = embedding_column(arch)
    files = list_partitions(pool_root, col)
    total = sum(f.rows for f in files)
    k = clusters if clusters is not None else default_clusters(total)
    sample = sample_rows(total, k, seed)
    uids, valids, embs, train_rows, reasons = [], [], [], [], []
    for f in files:
        uid, present, valid, emb, reason = read_embeddings(str(pool_root), f, col)
        uids.append(uid)
        valids.append(valid)
        embs.append(emb)
        reasons.append(reason)
        mine = sample[(sample >= f.offset) & (sample < f.offset + f.rows)] - f.offset
        train_rows.append(emb[np.searchsorted(np.flatnonzero(valid), mine[valid[mine]])])
    valid = np.concatenate(valids) if valids else np.zeros(0, bool)
    reason = np.concatenate(reasons) if reasons else np.zeros(0, object)
    uid = pa.chunked_array([ch for u in uids for ch in u.chunks], pa.string())
    index = np.flatnonzero(valid)
    train_set = np.concatenate(train_rows) if train_rows else np.zeros((0, 1), np.float32)
    stats.update({"embedding_column": col, "kmeans_sample": int(len(train_set)), "without_value": 0, "malformed": 0})
    if len(index):
        emb = np.concatenate([e for e in embs if len(e)])
        centroids = train(train_set, k, seed)
        label = np.concatenate([assign(e, centroids) for e in embs if len(e)])
        i, j = within_cluster_pairs(emb, label, 1.0 - eps)
        k_used = len(centroids)
    else:
        i = j = np.zeros(0, np.int64)
        k_used = 0
    present_rows = np.array([r is not None for r in reason], bool)
    stats.update({"clusters": int(k_used), "pairs": int(len(i)), "malformed": int(present_rows.sum()),
                  "without_value": int(len(valid) - valid.sum() - present_rows.sum())})
    if present_rows.any():
        stats["malformed_examples"] = [{"uid": uid[int(r)].as_py(), "semantic": reason[r]} for r in np.flatnonzero(present_rows)[:5]]
    group = group_ids(len(index), i, j, index)
    return [f.stem for f in files], [f.rows for f in files], uid, valid, group


__all__ = ["assign", "cluster_pairs", "embedding_rows", "list_partitions", "read_embeddings", "sample_rows", "semantic_groups",
           "train", "within_cluster_pairs"]
