"""pHash (and sha256) dedup as a dataframe job: the pieces that Dask (curate.dedup.dask_job) and Spark
(curate.dedup.spark_job) share, so both compute exactly what the local search computes. The semantic
job (curate.dedup.semantic) has its own steps 1-3 and shares steps 4-6.

The job, for pools that do not fit one machine (the driver only holds the plan, file list and counts):

1. rows: each task reads one `POOL/columns/phash/*.parquet` file -> (row, file, uid, h, k, valid, present,
   status, bad). `row` numbers rows over the files in name order, as the local engine does; `h` is the
   64-bit hash as a signed int64 (same bits). For sha256 the key is `k`, the lower-case digest, and the
   job stops after step 2: a row's group is its digest's node.
2. nodes: one per distinct hash, named by the smallest row holding it (`node = min(row) group by h`).
3. edges (phash): partition by an exact block, search each partition locally (curate.dedup.block_search).
   The 64 bits are cut into D + 1 contiguous blocks; two hashes within D bits agree exactly on at least one
   (pigeonhole). Every node is emitted once per block as (g = (block, block value), node, h): (D + 1) * n
   rows and one shuffle on g. Each partition then searches its groups: small groups all pairs at once,
   larger ones with the local engine's search (curate.dedup.hamming) on the bits the group does not share,
   an oversize group (skew) in exact sub-blocks one level down. A pair is kept only in the group of the
   FIRST block on which its two hashes agree, oriented node_a < node_b, so each pair comes out once.
   Cost: the shuffle is linear in n, and a group holds ~n / 2^(64 / (D + 1)) hashes, whose search grows
   slowly per hash. (Until 2026-12 this step was a meet-in-the-middle join of block keys with flips,
   whose joined rows grew as n^2 / 2^w: quadratic past ~1M hashes at D = 8.)
4. connected components of the edges, by alternating large-star and small-star steps (Kiveris et al.
   2014, "Connected Components in MapReduce and Beyond") as groupby/join rounds until the edge set stops
   changing. At that fixed point every component is a star around its smallest node: small-star leaves
   each node at most one smaller neighbour, large-star moves every edge off a node that has one, so no
   path longer than one edge survives. A node's group is its star's centre (or itself): the smallest row
   of its component, the same id `curate.dedup.groups.group_ids` gives.
5. keep: `first` keeps the row equal to its group id; `highest_clip_score` joins the score column by uid
   (NaN ranks last) and keeps, per group, the highest score, ties to the smallest row.
6. output: rows are shuffled by file and each task writes its files' `uid, dedup_phash_group,
   dedup_phash_keep` in row order (nulls where the row has no usable hash) into the staging folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate import storage
from curate.dedup.hamming import parse_hex64
from curate.dedup.names import SCORE_COLUMNS, DedupError


@dataclass(frozen=True)
class ColumnFile:
    """One input file of the job (a phash or sha256 column file): its position in name order and its first
    row number."""

    index: int
    path: str
    offset: int
    rows: int

    @property
    def stem(self) -> str:
        return storage.path(self.path).stem


ROW_COLUMNS = ["row", "file", "uid", "h", "k", "valid", "present", "status", "bad"]
STR = "string[pyarrow]"  # Dask's own choice for text columns; declaring it keeps merges free of casts


# --- 1. rows -----------------------------------------------------------------------------------------------


def read_rows(f: ColumnFile, signal: str = "phash"):
    """One column file of `signal` (phash or sha256) as the job's row frame (pandas). phash: `h` is the hash
    as int64, `k` null; sha256: `k` is the lower-case digest, `h` 0."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    t = storage.read_parquet(f.path)
    if signal not in t.column_names or "uid" not in t.column_names:
        raise DedupError(f"{f.path}: expected columns uid and {signal}, found {', '.join(t.column_names)}")
    text = t.column(signal).cast(pa.string())
    present = np.asarray(pc.is_valid(text).to_numpy(zero_copy_only=False), dtype=bool)
    if signal == "phash":
        values, valid = parse_hex64(text)
        key = pa.nulls(t.num_rows, pa.string())
    else:
        lower = pc.utf8_lower(text)
        ok = pc.and_(pc.is_valid(lower), pc.match_substring_regex(lower, r"^[0-9a-f]{64}$"))
        valid = np.asarray(pc.fill_null(ok, False).to_numpy(zero_copy_only=False), dtype=bool)
        values = np.zeros(t.num_rows, np.uint64)
        key = pc.if_else(pa.array(valid), lower, pa.nulls(t.num_rows, pa.string()))
    bad = pc.if_else(pa.array(present & ~valid), text, pa.nulls(len(text), pa.string()))
    status = t.column("status").cast(pa.string()) if "status" in t.column_names else pa.nulls(t.num_rows, pa.string())
    return pd.DataFrame({
        "row": np.arange(f.offset, f.offset + t.num_rows, dtype=np.int64),
        "file": np.full(t.num_rows, f.index, np.int32),
        "uid": t.column("uid").cast(pa.string()).to_pandas().astype(STR),
        "h": values.view(np.int64),
        "k": key.to_pandas().astype(STR),
        "valid": valid,
        "present": present,
        "status": status.to_pandas().astype(STR),
        "bad": bad.to_pandas().astype(STR),
    })


def rows_meta():
    import pandas as pd

    return pd.DataFrame({
        "row": pd.Series(dtype="int64"), "file": pd.Series(dtype="int32"), "uid": pd.Series(dtype=STR),
        "h": pd.Series(dtype="int64"), "k": pd.Series(dtype=STR), "valid": pd.Series(dtype="bool"),
        "present": pd.Series(dtype="bool"), "status": pd.Series(dtype=STR), "bad": pd.Series(dtype=STR),
    })


# --- 3. edges (the phash search itself: curate.dedup.block_search) ------------------------------------------


def edges_meta():
    import pandas as pd

    return pd.DataFrame({"u": pd.Series(dtype="int64"), "v": pd.Series(dtype="int64")})


# --- 5. keep ------------------------------------------------------------------------------------------------


def score_column(pool_root: Path, column: str | None) -> str:
    """Which CLIP score column --keep highest_clip_score reads (checked on file schemas, not data)."""
    import pyarrow.parquet as pq

    from curate.columns import find_store_signal
    from curate.pool import Pool, PoolError

    candidates = [column] if column else list(SCORE_COLUMNS)
    try:
        parts = Pool(pool_root).partitions()
    except PoolError as e:
        raise DedupError(f"--keep highest_clip_score needs a CLIP score column: {e}") from e
    for col in candidates:
        if all(col in pq.read_schema(storage.arrow_source(p.path)).names for p in parts) or find_store_signal(str(pool_root), col):
            return col
    raise DedupError("--keep highest_clip_score needs a CLIP score column (" + " or ".join(candidates) + ")")


def read_scores(args: tuple[str, str, str]):
    """(uid, score) of one pool partition; score NaN where missing."""
    import pandas as pd
    import pyarrow as pa

    from curate.columns import read_columns

    pool_root, path, col = args
    t = read_columns(pool_root, path, ["uid", col])
    s = t.column(col).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return pd.DataFrame({"uid": t.column("uid").cast(pa.string()).to_pandas().astype(STR), "score": np.asarray(s, np.float64)})


def max_score_per_uid(part):
    """(uid, score) rows holding whole uids -> one row per uid, its highest score (NaN only if all are)."""
    return part.groupby("uid", as_index=False, sort=False).score.max()


def scores_meta():
    import pandas as pd

    return pd.DataFrame({"uid": pd.Series(dtype=STR), "score": pd.Series(dtype="float64")})


# --- 6. output ----------------------------------------------------------------------------------------------


def write_files(part, files: dict[int, str], staging: str, group_col: str, keep_col: str):
    """Write each file present in `part` (rows of one or more whole files: row, file, uid, group, keep with
    group NaN/null where the row was not grouped). Returns (file, rows) of what was written."""
    import pandas as pd
    import pyarrow as pa

    out = []
    for fi, g in part.groupby("file", sort=True):
        g = g.sort_values("row")
        grouped = g["group"].notna().to_numpy()
        group = np.where(grouped, g["group"].fillna(-1).to_numpy(), 0).astype(np.int64)
        keep = np.where(grouped, pd.array(g["keep"].tolist(), dtype="boolean").fillna(False).to_numpy(bool), False)
        table = pa.table({
            "uid": pa.array(g["uid"].tolist(), pa.string()),
            group_col: pa.array(group, pa.int64(), mask=~grouped),
            keep_col: pa.array(keep, pa.bool_(), mask=~grouped),
        })
        storage.write_parquet(table, storage.path(staging) / f"{storage.path(files[int(fi)]).stem}.parquet")
        out.append((int(fi), len(g)))
    return pd.DataFrame({"file": pd.Series([f for f, _ in out], dtype="int64"), "rows": pd.Series([n for _, n in out], dtype="int64")})


def written_meta():
    import pandas as pd

    return pd.DataFrame({"file": pd.Series(dtype="int64"), "rows": pd.Series(dtype="int64")})


def write_empty(path: Path, group_col: str, keep_col: str) -> None:
    import pyarrow as pa

    storage.write_parquet(pa.table({"uid": pa.array([], pa.string()), group_col: pa.array([], pa.int64()),
                                    keep_col: pa.array([], pa.bool_())}), path)


def write_empty_files(files: list[ColumnFile], staging: Path, group_col: str, keep_col: str) -> list[ColumnFile]:
    """Write the output of each input file without rows (no task will see it); returns the others."""
    for f in files:
        if not f.rows:
            write_empty(staging / f"{f.stem}.parquet", group_col, keep_col)
    return [f for f in files if f.rows]


EMPTY_POOL_STATS = {"rows": 0, "malformed": 0, "without_value": 0, "distinct_hashes": 0, "groups": 0,
                    "groups_with_duplicates": 0, "largest_group": 0, "kept": 0, "rows_grouped": 0, "removed_as_duplicates": 0}


def start_job(method: str, files: list[ColumnFile], staging: Path, stats: dict):
    """The common start of the Dask and Spark hash jobs: (group column, keep column, key column, files with
    rows), or None when no file has rows (their empty outputs written, `stats` filled)."""
    gcol, kcol = f"dedup_{method}_group", f"dedup_{method}_keep"
    nonempty = write_empty_files(files, staging, gcol, kcol)
    if not nonempty:
        stats.update(EMPTY_POOL_STATS)
        return None
    return gcol, kcol, "h" if method == "phash" else "k", nonempty


def list_files(pool_root: Path, signal: str = "phash") -> list[ColumnFile]:
    """The signal's column files with their row counts (parquet footers only)."""
    import pyarrow.parquet as pq

    from curate.atomic import is_temporary
    d = pool_root / "columns" / signal
    paths = sorted(p for p in d.glob("*.parquet") if not is_temporary(p)) if d.is_dir() else []
    if not paths:
        raise DedupError(f"{pool_root}: no '{signal}' columns in {d}; run `curate stage --pool {pool_root} --signals {signal}` first")
    out, offset = [], 0
    for i, p in enumerate(paths):
        meta = pq.ParquetFile(storage.arrow_source(p))
        names = meta.schema_arrow.names
        if signal not in names or "uid" not in names:
            raise DedupError(f"{p}: expected columns uid and {signal}, found {', '.join(names)}")
        n = meta.metadata.num_rows
        out.append(ColumnFile(i, str(p), offset, n))
        offset += n
    return out


__all__ = ["ColumnFile", "list_files", "read_rows", "write_files"]


# --- per-partition steps of the Dask job (each after a shuffle that puts equal keys in one partition) ---------


def min_row_per_key(part, key: str):
    """Rows (row, key) of whole key groups -> nodes (key, node = smallest row)."""
    return part.groupby(key, sort=False, as_index=False).row.min().rename(columns={"row": "node"})[[key, "node"]]


def nodes_meta(key: str):
    import pandas as pd

    return pd.DataFrame({key: pd.Series(dtype="int64" if key == "h" else STR), "node": pd.Series(dtype="int64")})


def large_star(part):
    """Edges (u, v) listed from both ends, all of each u in this partition -> (v, m(u)) for every v > u,
    m(u) the smallest of u and its neighbours."""
    import pandas as pd

    if not len(part):
        return edges_meta()
    m = part.groupby("u").v.transform("min").to_numpy(np.int64)
    u, v = part.u.to_numpy(np.int64), part.v.to_numpy(np.int64)
    m = np.minimum(m, u)
    big = v > u
    return pd.DataFrame({"u": v[big], "v": m[big]})


def small_star(part):
    """Edges oriented (u, v) with v < u, all of each u here -> (v, m(u)) for each v != m(u), and (u, m(u)),
    m(u) = the smallest neighbour of u."""
    import pandas as pd

    if not len(part):
        return edges_meta()
    m = part.groupby("u").v.transform("min").to_numpy(np.int64)
    u, v = part.u.to_numpy(np.int64), part.v.to_numpy(np.int64)
    moved = v != m
    return pd.DataFrame({"u": np.concatenate([v[moved], u]), "v": np.concatenate([m[moved], m])})


def orient(part):
    import pandas as pd

    u, v = part.u.to_numpy(np.int64), part.v.to_numpy(np.int64)
    return pd.DataFrame({"u": np.maximum(u, v), "v": np.minimum(u, v)})


def both_ends(part):
    import pandas as pd

    u, v = part.u.to_numpy(np.int64), part.v.to_numpy(np.int64)
    return pd.DataFrame({"u": np.concatenate([u, v]), "v": np.concatenate([v, u])})


def distinct_edges(part):
    return part.drop_duplicates(["u", "v"])


def tagged_meta():
    import pandas as pd

    return pd.DataFrame({"u": pd.Series(dtype="int64"), "v": pd.Series(dtype="int64"), "side": pd.Series(dtype="int8")})


def count_unmatched(part):
    """Rows (u, v, side) of two edge sets, equal edges in one partition -> how many edges are in only one."""
    import pandas as pd

    if not len(part):
        return pd.Series([0], dtype="int64")
    sides = part.groupby(["u", "v"]).side.nunique()
    return pd.Series([int((sides < 2).sum())], dtype="int64")


def pick_keepers(part, keep: str):
    """Grouped rows (row, uid, group[, score]) holding whole groups -> with `keep`: the smallest row
    (`first`), or the highest score with NaN last and ties to the smallest row."""
    if not len(part):
        out = part[["row", "uid", "group"]].copy()
        out["keep"] = np.zeros(0, bool)
        return out
    row, group = part.row.to_numpy(np.int64), part.group.to_numpy(np.int64)
    if keep == "first":
        k = row == group
    else:
        s = part.score.to_numpy(np.float64)
        s = np.where(np.isnan(s), -np.inf, s)
        order = np.lexsort((row, -s, group))
        g = group[order]
        first = np.ones(len(g), bool)
        first[1:] = g[1:] != g[:-1]
        k = np.zeros(len(row), bool)
        k[order[first]] = True
    out = part[["row", "uid", "group"]].copy()
    out["keep"] = k
    return out


def kept_meta():
    import pandas as pd

    return pd.DataFrame({"row": pd.Series(dtype="int64"), "uid": pd.Series(dtype=STR),
                         "group": pd.Series(dtype="int64"), "keep": pd.Series(dtype="bool")})


def group_sizes(part):
    """Grouped rows holding whole groups -> (groups, groups with 2+ rows, largest, kept) of this partition."""
    import pandas as pd

    sizes = part.groupby("group").row.count() if len(part) else pd.Series([], dtype="int64")
    return pd.DataFrame({"groups": [len(sizes)], "dups": [int((sizes > 1).sum())],
                         "largest": [int(sizes.max()) if len(sizes) else 0], "kept": [int(part.keep.sum()) if len(part) else 0]})
