"""`curate dedup`: group a pool's duplicates and write `POOL/columns/dedup_<method>/`.

Methods:
- `phash`: every pair within `max_distance` bits of pHash, exactly (curate.dedup.hamming), grouped
  transitively;
- `sha256`: identical image bytes;
- `semantic`: SemDeDup-style (curate.dedup.semantic): faiss k-means, trained on a bounded sample of the
  L2-normalised CLIP image embeddings, then pairs within one cluster with cosine > 1 - eps, grouped
  transitively.

On the local engine each method runs in this process (vectorised numpy). With `--engine dask` or
`--engine spark` every method runs as a dataframe job on the cluster: workers read the files, pair rows
(phash: block keys joined and verified, curate.dedup.frames; sha256: group by digest; semantic: clusters
assigned with broadcast centroids, then pairs per cluster), find connected components by star rounds,
apply the keep rule and write the output files; the driver holds only the plan, the k-means sample and
centroids, and counts. Every engine writes identical columns.

Output, one file per input file (the stage's column files for phash/sha256, the pool's partitions for
semantic): `uid`, `dedup_<method>_group` (int64: the smallest row index among the group's members, rows
numbered over the input files in name order) and `dedup_<method>_keep` (one True per group by the keep
rule). Rows without a usable value (no image, failed decode, malformed hash or embedding) get nulls, and
the `dedup` filter rejects them. The whole folder is written beside the store and swapped in when
complete, so a killed run leaves the previous result or none, never a mix. Statistics go to
`POOL/columns/dedup_<method>_stats.json`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import is_temporary, replace_folder, write_json
from curate.dedup.frames import list_files
from curate.dedup.groups import group_ids, keep_representatives
from curate.dedup.hamming import chance_pairs, distinct_pairs, make_plan, parse_hex64, safe_distance
from curate.dedup.names import KEEP_RULES, METHODS, SCORE_COLUMNS, DedupError, column_names, embedding_column
from curate.dedup.semantic import list_partitions, semantic_groups

@dataclass
class Rows:
    """A signal's values over the pool, in file order, with where each file's rows start."""

    names: list[str]  # output file stems
    sizes: list[int]
    uid: pa.ChunkedArray
    value: pa.ChunkedArray
    status: pa.ChunkedArray | None


def read_store_signal(pool_root: Path, signal: str) -> Rows:
    d = pool_root / "columns" / signal
    files = sorted(p for p in d.glob("*.parquet") if not is_temporary(p)) if d.is_dir() else []
    if not files:
        raise DedupError(f"{pool_root}: no '{signal}' columns in {d}; run `curate stage --pool {pool_root} --signals {signal}` first")
    tables = []
    for f in files:
        t = storage.read_parquet(f)
        if signal not in t.column_names or "uid" not in t.column_names:
            raise DedupError(f"{f}: expected columns uid and {signal}, found {', '.join(t.column_names)}")
        tables.append(t)
    status = [t.column("status") if "status" in t.column_names else pa.chunked_array([pa.nulls(t.num_rows, pa.string())]) for t in tables]
    return Rows(
        names=[f.stem for f in files],
        sizes=[t.num_rows for t in tables],
        uid=pa.chunked_array([c for t in tables for c in t.column("uid").chunks], pa.string()),
        value=pa.chunked_array([c for t in tables for c in t.column(signal).cast(pa.string()).chunks], pa.string()),
        status=pa.chunked_array([c for s in status for c in s.cast(pa.string()).chunks], pa.string()),
    )


# --- scores for --keep highest_clip_score --------------------------------------------------------------------


def read_scores(pool_root: Path, uids: pa.ChunkedArray, column: str | None = None) -> tuple[np.ndarray, str]:
    """The CLIP score of each uid (NaN where none), from the metadata or the column store."""
    from curate.columns import MissingColumnError, read_columns
    from curate.pool import Pool, PoolError

    pool = Pool(pool_root)
    candidates = [column] if column else list(SCORE_COLUMNS)
    errors = []
    for col in candidates:
        try:
            tables = [read_columns(pool_root, p.path, ["uid", col]) for p in pool.partitions()]
        except (MissingColumnError, PoolError) as e:
            errors.append(str(e))
            continue
        table = pa.concat_tables(tables)
        idx = pc.index_in(uids, value_set=table.column("uid"))
        scores = pc.take(table.column(col).cast(pa.float64()), idx)
        return np.asarray(scores.to_numpy(zero_copy_only=False), dtype=np.float64), col
    raise DedupError("--keep highest_clip_score needs a CLIP score column (" + " or ".join(candidates) + "): " + "; ".join(errors))


# --- methods -------------------------------------------------------------------------------------------------


def _hash_pairs(values: np.ndarray, max_distance: int, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pairs among DISTINCT hash values, in this process (the local engine)."""
    plan = make_plan(len(values), max_distance)
    stats["plan"] = plan.describe()
    i, j, _ = distinct_pairs(values, max_distance, plan, stats)
    return i, j


def phash_groups(rows: Rows, max_distance: int, engine, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, group id per valid row)."""
    values, valid = parse_hex64(rows.value)
    present = np.asarray(pc.is_valid(rows.value).to_numpy(zero_copy_only=False), dtype=bool)
    malformed = present & ~valid
    stats["malformed"] = int(malformed.sum())
    if malformed.any():
        at = np.flatnonzero(malformed)[:5]
        stats["malformed_examples"] = [{"uid": rows.uid[int(k)].as_py(), "phash": rows.value[int(k)].as_py()} for k in at]
    missing = ~present
    stats["without_value"] = int(missing.sum())
    if missing.any() and rows.status is not None:
        stats["without_value_by_status"] = dict(Counter(s if s is not None else "null" for s in pc.filter(rows.status, pa.array(missing)).to_pylist()))
    index = np.flatnonzero(valid)
    uniq, first, inverse = np.unique(values[index], return_index=True, return_inverse=True)
    stats["distinct_hashes"] = int(len(uniq))
    i, j = _hash_pairs(uniq, max_distance, stats)
    stats["pairs_of_distinct_hashes"] = int(len(i))
    group_of_distinct = group_ids(len(uniq), i, j, index[first])
    return valid, group_of_distinct[inverse]


def sha256_groups(rows: Rows, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    value = pc.utf8_lower(rows.value)
    ok = pc.and_(pc.is_valid(value), pc.match_substring_regex(value, r"^[0-9a-f]{64}$"))
    valid = np.asarray(pc.fill_null(ok, False).to_numpy(zero_copy_only=False), dtype=bool)
    present = np.asarray(pc.is_valid(rows.value).to_numpy(zero_copy_only=False), dtype=bool)
    malformed = present & ~valid
    stats["malformed"] = int(malformed.sum())
    if malformed.any():
        stats["malformed_examples"] = [{"uid": rows.uid[int(k)].as_py(), "sha256": rows.value[int(k)].as_py()} for k in np.flatnonzero(malformed)[:5]]
    stats["without_value"] = int((~present).sum())
    index = np.flatnonzero(valid)
    codes = value.filter(pa.array(valid)).combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
    smallest = np.full(int(codes.max()) + 1 if len(codes) else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(smallest, codes, index)
    stats["distinct_hashes"] = int(len(smallest))
    return valid, smallest[codes]


def _write_outputs(pool_root: Path, method: str, rows_names, sizes, uid, valid, group_valid, keep_valid) -> Path:
    gcol, kcol = column_names(method)
    n = len(valid)
    group = np.zeros(n, np.int64)
    keep = np.zeros(n, bool)
    group[valid] = group_valid
    keep[valid] = keep_valid
    staging = _staging(pool_root, method)
    start = 0
    nulls = pa.array(~valid)
    for name, size in zip(rows_names, sizes):
        sl = slice(start, start + size)
        table = pa.table({
            "uid": uid.slice(start, size),
            gcol: pa.array(group[sl], pa.int64(), mask=nulls[sl].to_numpy(zero_copy_only=False)),
            kcol: pa.array(keep[sl], pa.bool_(), mask=nulls[sl].to_numpy(zero_copy_only=False)),
        })
        storage.write_parquet(table, staging / f"{name}.parquet")
        start += size
    return _swap_in(pool_root, method, staging)


def _staging(pool_root: Path, method: str) -> Path:
    # staged outside columns/ so that the column store never sees a half-written folder
    staging = pool_root / f".dedup_{method}.staging"
    storage.remove_tree(staging)
    staging.mkdir(parents=True)
    return staging


def _swap_in(pool_root: Path, method: str, staging: Path) -> Path:
    target = pool_root / "columns" / f"dedup_{method}"
    replace_folder(staging, target, pool_root / f".dedup_{method}.old")
    return target


CHANCE_SHARE = 0.01  # above this many chance pairs a distinct hash (if uniform), `curate dedup` warns


def _note_chance_pairs(stats: dict) -> None:
    """pHash: how many pairs within D the pool's distinct hashes would have by chance alone were they uniform
    (hamming.chance_pairs), and, past CHANCE_SHARE of them, the largest D that stays within it (the CLI warns).
    It grows as n² for a fixed D: unrelated images start to join groups as pools grow."""
    if stats["method"] != "phash" or not stats.get("distinct_hashes"):
        return
    n, d = stats["distinct_hashes"], stats["max_distance"]
    stats["chance_pairs_if_uniform"] = round(chance_pairs(n, d))
    if stats["chance_pairs_if_uniform"] > CHANCE_SHARE * n:
        stats["chance_pairs_below_1pct_at_max_distance"] = safe_distance(n, d, CHANCE_SHARE)


def _run_frames(pool_root: Path, method: str, engine, max_distance: int, keep: str, score_column: str | None,
                stats: dict, start: float, eps: float, clusters: int | None, arch: str, seed: int) -> dict:
    """Any method as a Dask or Spark dataframe job (curate.dedup.frames, curate.dedup.semantic)."""
    if method == "semantic":
        col = embedding_column(arch)
        files = list_partitions(pool_root, col)
    else:
        files = list_files(pool_root, method)
    staging = _staging(pool_root, method)
    try:
        if engine.name == "dask":
            from curate.dedup import dask_job

            if method == "semantic":
                dask_job.dask_semantic(engine.client, pool_root, files, col, eps, clusters, seed, keep, score_column, staging, stats)
            else:
                dask_job.dask_dedup(engine.client, pool_root, method, files, max_distance, keep, score_column, staging, stats)
        else:
            from curate.dedup import spark_job

            if method == "semantic":
                spark_job.spark_semantic(engine.spark, pool_root, files, col, eps, clusters, seed, keep, score_column, staging, stats)
            else:
                spark_job.spark_dedup(engine.spark, pool_root, method, files, max_distance, keep, score_column, staging, stats)
    except BaseException:
        storage.remove_tree(staging)
        raise
    out = _swap_in(pool_root, method, staging)
    stats.update({"output": str(out), "seconds": round(time.perf_counter() - start, 3)})
    _note_chance_pairs(stats)
    write_json(pool_root / "columns" / f"dedup_{method}_stats.json", stats)
    return stats


def run_dedup(
    pool_root: str | os.PathLike,
    method: str = "phash",
    *,
    engine=None,
    max_distance: int = 4,
    keep: str = "first",
    score_column: str | None = None,
    eps: float = 0.05,
    clusters: int | None = None,
    arch: str = "l14",
    seed: int = 0,
) -> dict:
    """Group the pool's duplicates by `method`, write the dedup columns, and return the statistics."""
    pool_root = storage.path(pool_root)  # a folder, or an object-store URL
    if method not in METHODS:
        raise DedupError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if keep not in KEEP_RULES:
        raise DedupError(f"unknown keep rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    start = time.perf_counter()
    stats: dict = {"pool": str(pool_root), "method": method, "keep": keep, "engine": getattr(engine, "name", "local")}
    if method == "phash":
        stats["max_distance"] = max_distance
    elif method == "semantic":
        stats.update({"eps": eps, "arch": arch})
    if stats["engine"] in ("dask", "spark"):
        return _run_frames(pool_root, method, engine, max_distance, keep, score_column, stats, start, eps, clusters, arch, seed)
    if method == "phash":
        rows = read_store_signal(pool_root, "phash")
        valid, group = phash_groups(rows, max_distance, engine, stats)
        names, sizes, uid = rows.names, rows.sizes, rows.uid
    elif method == "sha256":
        rows = read_store_signal(pool_root, "sha256")
        valid, group = sha256_groups(rows, stats)
        names, sizes, uid = rows.names, rows.sizes, rows.uid
    else:
        names, sizes, uid, valid, group = semantic_groups(pool_root, eps=eps, clusters=clusters, arch=arch, seed=seed, stats=stats)
    index = np.flatnonzero(valid)
    scores = None
    if keep == "highest_clip_score":
        all_scores, col = read_scores(pool_root, uid, score_column)
        scores = all_scores[index]
        stats["score_column"] = col
    keep_valid = keep_representatives(group, index, scores)
    out = _write_outputs(pool_root, method, names, sizes, uid, valid, group, keep_valid)
    sizes_of_groups = np.bincount(np.unique(group, return_inverse=True)[1]) if len(group) else np.zeros(0, np.int64)
    stats.update({
        "rows": int(len(valid)),
        "rows_grouped": int(valid.sum()),
        "groups": int(len(sizes_of_groups)),
        "groups_with_duplicates": int((sizes_of_groups > 1).sum()),
        "largest_group": int(sizes_of_groups.max()) if len(sizes_of_groups) else 0,
        "kept": int(keep_valid.sum()),
        "removed_as_duplicates": int(len(keep_valid) - keep_valid.sum()),
        "output": str(out),
        "seconds": round(time.perf_counter() - start, 3),
    })
    _note_chance_pairs(stats)
    write_json(pool_root / "columns" / f"dedup_{method}_stats.json", stats)
    return stats


__all__ = ["DedupError", "KEEP_RULES", "METHODS", "column_names", "read_store_signal", "run_dedup"]
