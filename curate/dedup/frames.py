"""pHash (and sha256) dedup as a dataframe job: the pieces that Dask (curate.dedup.dask_job) and Spark
(curate.dedup.spark_job) share, so both compute exactly what the local search computes. The semantic
job (curate.dedup.semantic) has its own steps 1-3, shares step 4, and keeps its rows (with their uids) for
its keep rule and output (`pick_keepers`, `group_sizes`, `write_files`).

The job, for pools that do not fit one machine (the driver only holds the plan, file list and counts):

1. rows: each task reads one `POOL/columns/phash/*.parquet` file twice, cheaply: once for its counts (rows, with
   a value, valid, missing by status, the first malformed rows: `file_summary`, one row a file to the driver),
   once for the keys of its valid rows (`read_keys`: row, file, h). `row` numbers rows over the files in name
   order, as the local engine does; `h` is the 64-bit hash as a signed int64 (same bits). For sha256 the key
   is `k`, the lower-case digest, and the job skips step 3. Uids do not travel (step 6 reads them back from
   the file), except for --keep highest_clip_score, which joins scores by uid.
2. nodes: one shuffle on the key; each row learns `node` (the smallest row holding its value: the distinct
   hash's name) and `cnt` (rows holding it). Nothing the size of the pool is persisted: steps 3 and 6
   compute these rows again (Dask) or read them from the executors' disks (Spark).
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
5. groups and keep: a row's group is its node's label (the star centre) or, without edges, its node. Spark
   joins the label table (nodes with edges) to the rows: a broadcast join while small, else a shuffle join.
   Dask joins nothing to the rows: each label, as (row = label, file = LABEL_FILE, h = its node's hash),
   rides in the key shuffle with the keys and meets its rows there (`as_key_rows`, `group_rows_of_keys`).
   A row is in a group of two or more when its value is held by several rows or its node has a label.
   `first` keeps the row equal to its group id (no shuffle); `highest_clip_score` joins the score column by
   uid for the rows of such groups only (NaN ranks last) and keeps, per group, the highest score, ties to the
   smallest row (on Dask the rows it drops then ride in the key shuffle as the labels do, DROP_FILE).
6. output: rows are shuffled by file; each task reads its files' uids back and writes `uid,
   dedup_phash_group, dedup_phash_keep` in row order (nulls where the row has no usable hash) into the
   staging folder, returning its counts (groups, groups with duplicates, kept, distinct values) and, on
   Dask, the rows of each group of two or more it wrote (summed by group for the largest group), so the
   writers are the rows' one consumer. A file without a valid row gets its
   output (uids, nulls) from the driver.
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


STR = "string[pyarrow]"  # Dask's own choice for text columns; declaring it keeps merges free of casts
EXAMPLES = 5  # malformed rows the stats show


# --- 1. rows: per-file counts, and the keys of the valid rows -------------------------------------------------


def _parse(f: ColumnFile, signal: str, uid: bool = False):
    """One column file of `signal` (phash or sha256) -> (table, text, present, valid, values, key): `values` the
    phash as uint64 (0 where invalid), `key` the lower-case sha256 digest (arrow, null where invalid)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = pq.ParquetFile(storage.arrow_source(f.path)).schema_arrow.names
    if signal not in names or "uid" not in names:
        raise DedupError(f"{f.path}: expected columns uid and {signal}, found {', '.join(names)}")
    t = storage.read_parquet(f.path, [c for c in ("uid", signal, "status") if c in names and (uid or c != "uid")])
    text = t.column(signal).cast(pa.string())
    present = np.asarray(pc.is_valid(text).to_numpy(zero_copy_only=False), dtype=bool)
    key = None
    if signal == "phash":
        values, valid = parse_hex64(text)
    else:
        lower = pc.utf8_lower(text)
        ok = pc.and_(pc.is_valid(lower), pc.match_substring_regex(lower, r"^[0-9a-f]{64}$"))
        valid = np.asarray(pc.fill_null(ok, False).to_numpy(zero_copy_only=False), dtype=bool)
        values = np.zeros(t.num_rows, np.uint64)
        key = lower
    return t, text, present, valid, values, key


def file_summary(f: ColumnFile, signal: str = "phash"):
    """One file's counts as a one-row frame: rows, rows with a value, valid ones, the rows without a value by
    status (JSON), and its first EXAMPLES malformed rows (JSON [row, uid, value]). The job's statistics come
    from these, so no step holds the pool's rows to count them."""
    import json

    import pandas as pd
    import pyarrow as pa

    t, text, present, valid, _, _ = _parse(f, signal)
    missing = ~present
    status = {}
    if missing.any():
        col = t.column("status").cast(pa.string()).to_pylist() if "status" in t.column_names else [None] * t.num_rows
        for i in np.flatnonzero(missing):
            s = "null" if col[i] is None else str(col[i])
            status[s] = status.get(s, 0) + 1
    bad = np.flatnonzero(present & ~valid)[:EXAMPLES]
    uids = storage.read_parquet(f.path, ["uid"]).column("uid").cast(pa.string()) if len(bad) else None  # rarely needed
    examples = [[int(f.offset + i), uids[int(i)].as_py(), text[int(i)].as_py()] for i in bad]
    return pd.DataFrame({"file": [f.index], "rows": [t.num_rows], "present": [int(present.sum())], "valid": [int(valid.sum())],
                         "status": [json.dumps(status)], "examples": [json.dumps(examples)]})


def summary_meta():
    import pandas as pd

    return pd.DataFrame({"file": pd.Series(dtype="int64"), "rows": pd.Series(dtype="int64"), "present": pd.Series(dtype="int64"),
                         "valid": pd.Series(dtype="int64"), "status": pd.Series(dtype="object"), "examples": pd.Series(dtype="object")})


def apply_summary(summary, method: str, stats: dict) -> dict[int, int]:
    """The per-file summaries (file_summary rows, any order) -> the job's row statistics in `stats`; returns
    each file's count of valid rows."""
    import json

    total, present = int(summary["rows"].sum()), int(summary["present"].sum())
    nvalid = int(summary["valid"].sum())
    stats["rows"] = total
    stats["malformed"] = present - nvalid
    if stats["malformed"]:
        examples = sorted(e for text in summary["examples"] for e in json.loads(text))[:EXAMPLES]
        stats["malformed_examples"] = [{"uid": u, method: b} for _, u, b in examples]
    stats["without_value"] = total - present
    if stats["without_value"] and method == "phash":
        by: dict[str, int] = {}
        for text in summary["status"]:
            for k, v in json.loads(text).items():
                by[k] = by.get(k, 0) + int(v)
        stats["without_value_by_status"] = by
    return {int(i): int(v) for i, v in zip(summary["file"], summary["valid"])}


def read_keys(f: ColumnFile, signal: str = "phash", uid: bool = False):
    """The valid rows of one file as (row, file, key[, uid]): `h` the phash as int64 (same bits), or `k` the
    lower-case sha256 digest. The uid only when the keep rule joins scores by it."""
    import pandas as pd
    import pyarrow as pa

    t, _, _, valid, values, key = _parse(f, signal, uid=uid)
    at = np.flatnonzero(valid)
    cols = {"row": (f.offset + at).astype(np.int64), "file": np.full(len(at), f.index, np.int32)}
    if signal == "phash":
        cols["h"] = values[at].view(np.int64)
    else:
        cols["k"] = key.take(pa.array(at)).to_pandas().astype(STR)
    if uid:
        cols["uid"] = t.column("uid").cast(pa.string()).take(pa.array(at)).to_pandas().astype(STR)
    return pd.DataFrame(cols)


def keys_meta(key: str, uid: bool = False):
    import pandas as pd

    cols = {"row": pd.Series(dtype="int64"), "file": pd.Series(dtype="int32"),
            key: pd.Series(dtype="int64" if key == "h" else STR)}
    if uid:
        cols["uid"] = pd.Series(dtype=STR)
    return pd.DataFrame(cols)


# --- 2. nodes: each row learns the smallest row holding its key, and how many rows do -------------------------


def assign_nodes(part, key: str):
    """Rows (row, file, key[, uid]) holding whole keys -> the same rows with `node` (the smallest row holding the
    key: the distinct hash's name) and `cnt` (rows holding it). A row whose key is held by no other row and
    whose node has no edge is a group of its own: most of a pool, so no later step moves it twice."""
    out = part.copy()
    by = part.groupby(key, sort=False).row
    out["node"] = by.transform("min").astype(np.int64)
    out["cnt"] = by.transform("size").astype(np.int64)
    return out


def nodes_meta(key: str, uid: bool = False):
    meta = keys_meta(key, uid)
    meta["node"] = meta["row"]
    meta["cnt"] = meta["row"]
    return meta


# --- 3. edges (the phash search itself: curate.dedup.block_search) ------------------------------------------


def edges_meta():
    import pandas as pd

    return pd.DataFrame({"u": pd.Series(dtype="int64"), "v": pd.Series(dtype="int64")})


# --- frames held on disk between steps (the Dask job's pair-sized frames) -------------------------------------


def write_piece(part, where: str) -> int:
    """One partition as one parquet file at `where` (a local path or an object URL; written whole): the Dask job
    holds its pair-sized frames (edges, star rounds, labels, dropped rows) in files beside the pool, not in the
    workers' memory, so a worker's memory follows its partitions as the pool grows."""
    import pyarrow as pa

    if not storage.is_url(where):
        Path(where).parent.mkdir(parents=True, exist_ok=True)
    storage.write_parquet(pa.Table.from_pandas(part, preserve_index=False), where)
    return len(part)


def read_piece(where: str, dtypes: dict):
    """A file of write_piece back as the partition it was, with the frame's own dtypes (an Arrow string column
    comes back as Arrow strings, as the shuffles it rides in need)."""
    return storage.read_parquet(where).to_pandas().astype(dtypes)


# --- 5. groups and keep ---------------------------------------------------------------------------------------


# Rows that ride in the Dask job's key shuffle beside the keys, shaped as keys, so that it needs no join of its
# own (a join's tasks wait on another frame's partitions, and Dask then finishes key partitions long before
# they are taken): a label (row = the label, key = its node's hash) and a row the score rule does not keep
# (row = that row, key = its key).
LABEL_FILE = -1
DROP_FILE = -2


def as_key_rows(frame, row: str, key: str, file: int, uid: bool = False):
    """(row, key) of labels or dropped rows -> rows shaped as the keys (row, file = LABEL_FILE or DROP_FILE,
    key[, uid])."""
    import pandas as pd

    out = pd.DataFrame({"row": frame[row].to_numpy(np.int64), "file": np.full(len(frame), file, np.int32)})
    # the keys' own dtype: equal keys must hash alike in the shuffle
    out[key] = pd.Series(frame[key].to_numpy(), index=out.index).astype(keys_meta(key)[key].dtype)
    if uid:
        out["uid"] = pd.Series(pd.NA, index=out.index, dtype=STR)
    return out


def group_rows_of_keys(part, key: str, keep: str | None):
    """Rows holding whole keys (row, file, key[, uid]) and the rows riding with them (as_key_rows) -> (row,
    file, node, group, multi, ...): `node` as assign_nodes gives it, `group` the label of the row's hash, else
    its node, `multi` in a group of two or more; then `keep` the row that is its group's id (keep "first"), or
    not a dropped row (keep "drops"); or, without a keep rule, the uid and key a score rule ranks by. A rider
    whose key no row holds is an error, not a lost group or flag."""
    file = part["file"].to_numpy()
    labels, drops = part[file == LABEL_FILE], part[file == DROP_FILE]
    part = assign_nodes(part[file >= 0], key)
    node = part["node"].to_numpy(np.int64)
    label = np.full(len(part), np.nan)
    if len(labels):
        at = _index(labels[key]).get_indexer(part[key])
        found = np.zeros(len(labels), bool)
        found[at[at >= 0]] = True
        if not found.all():
            raise RuntimeError(f"{int((~found).sum())} labels for keys no row holds")
        label = np.where(at >= 0, labels["row"].to_numpy(np.int64)[np.maximum(at, 0)], np.nan)
    has = ~np.isnan(label)
    out = part[["row", "file", "node"]].copy()
    out["group"] = np.where(has, label, node).astype(np.int64)
    out["multi"] = (part["cnt"].to_numpy(np.int64) > 1) | has
    if keep == "first":
        out["keep"] = out["row"].to_numpy(np.int64) == out["group"].to_numpy(np.int64)
    elif keep == "drops":
        at = _index(part["row"]).get_indexer(drops["row"])
        held = at >= 0
        held[held] = part[key].to_numpy()[at[held]] == drops[key].to_numpy()[held]  # the row, with that key
        if not held.all():
            raise RuntimeError(f"{int((~held).sum())} dropped rows for keys no row holds")
        keep_row = np.ones(len(part), bool)
        keep_row[at] = False
        out["keep"] = keep_row
    else:  # by position: a shuffle's output index may repeat
        out["uid"], out[key] = part["uid"].array, part[key].array
    return out


def _index(values):
    import pandas as pd

    return pd.Index(np.asarray(values))


def grouped_meta(key: str, keep: str | None):
    import pandas as pd

    cols = {"row": pd.Series(dtype="int64"), "file": pd.Series(dtype="int32"), "node": pd.Series(dtype="int64"),
            "group": pd.Series(dtype="int64"), "multi": pd.Series(dtype="bool")}
    if keep:
        cols["keep"] = pd.Series(dtype="bool")
    else:
        cols["uid"] = pd.Series(dtype=STR)
        cols[key] = keys_meta(key)[key]
    return pd.DataFrame(cols)


def in_groups(part, key: str):
    """Grouped rows -> (row, uid, group, key) of those in groups of two or more (the rows a score rule ranks)."""
    return part.loc[part["multi"].to_numpy(bool), ["row", "uid", "group", key]]


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


def _output_table(uids, group: np.ndarray, keep: np.ndarray, grouped: np.ndarray, group_col: str, keep_col: str):
    """One output file: uid, group and keep, both null where the row was not grouped (no usable value)."""
    import pyarrow as pa

    return pa.table({"uid": uids, group_col: pa.array(group, pa.int64(), mask=~grouped),
                     keep_col: pa.array(keep, pa.bool_(), mask=~grouped)})


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
        table = _output_table(pa.array(g["uid"].tolist(), pa.string()), group, keep, grouped, group_col, keep_col)
        storage.write_parquet(table, storage.path(staging) / f"{storage.path(files[int(fi)]).stem}.parquet")
        out.append((int(fi), len(g)))
    return pd.DataFrame({"file": pd.Series([f for f, _ in out], dtype="int64"), "rows": pd.Series([n for _, n in out], dtype="int64")})


def write_group_file(f: ColumnFile, staging: str, group_col: str, keep_col: str, row=None, group=None, keep=None) -> None:
    """One input file's output: its uids read back from the file itself (they never travel through the job),
    group and keep at the valid rows `row` (pool row numbers), null elsewhere."""
    import pyarrow as pa

    n = f.rows
    grouped = np.zeros(n, bool)
    g = np.zeros(n, np.int64)
    k = np.zeros(n, bool)
    if row is not None and len(row):
        at = np.asarray(row, np.int64) - f.offset
        grouped[at], g[at], k[at] = True, group, keep
    uids = storage.read_parquet(f.path, ["uid"]).column("uid").cast(pa.string()).combine_chunks()
    if len(uids) != n:
        raise DedupError(f"{f.path}: {len(uids)} rows, {n} when the job started (the file changed while dedup ran)")
    storage.write_parquet(_output_table(uids, g, k, grouped, group_col, keep_col), storage.path(staging) / f"{f.stem}.parquet")


def write_groups(part, files: dict, staging: str, group_col: str, keep_col: str):
    """Rows (row, file, node, group, keep, multi) of whole files -> each file's output (write_group_file), and
    per file its counts: rows written, groups (rows that are their group's id), groups with duplicates,
    rows kept, distinct values (rows that are their value's node)."""
    import pandas as pd

    out = []
    for fi, g in part.groupby("file", sort=True):
        row, group = g["row"].to_numpy(np.int64), g["group"].to_numpy(np.int64)
        keep, lead = g["keep"].to_numpy(bool), row == group
        write_group_file(files[int(fi)], staging, group_col, keep_col, row, group, keep)
        out.append((int(fi), len(g), int(lead.sum()), int((lead & g["multi"].to_numpy(bool)).sum()), int(keep.sum()),
                    int((row == g["node"].to_numpy(np.int64)).sum())))
    cols = ["file", "rows", "groups", "dups", "kept", "distinct"]
    return pd.DataFrame({c: pd.Series([o[i] for o in out], dtype="int64") for i, c in enumerate(cols)})


def write_groups_sized(part, files: dict, staging: str, group_col: str, keep_col: str):
    """write_groups, and the rows of each group with duplicates in this part (group_rows): one pass over the
    part, so an engine need not hold it for a second reader."""
    return write_groups(part, files, staging, group_col, keep_col), group_rows(part)


def group_rows(part):
    """(group, rows) of the groups with duplicates (the rows flagged multi) in this part."""
    import pandas as pd

    sizes = part.loc[part["multi"].to_numpy(bool), "group"].value_counts(sort=False)
    return pd.DataFrame({"group": sizes.index.to_numpy(np.int64), "rows": sizes.to_numpy(np.int64)})


def group_rows_meta():
    import pandas as pd

    return pd.DataFrame({"group": pd.Series(dtype="int64"), "rows": pd.Series(dtype="int64")})


def groups_written_meta():
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype="int64") for c in ["file", "rows", "groups", "dups", "kept", "distinct"]})


def finish_groups(written, valid_per_file: dict[int, int], files: list[ColumnFile], largest: int, staging: str,
                  group_col: str, keep_col: str, stats: dict) -> None:
    """The writers' per-file counts -> the group statistics; a file none of whose rows is valid had no rows in
    the job, so its output (uids, nulls) is written here; any other file missing is an error."""
    done = {int(f) for f in written["file"]}
    for f in files:
        if f.index not in done:
            if valid_per_file.get(f.index, 0):
                raise RuntimeError(f"dedup output missing for {f.path}")
            write_group_file(f, staging, group_col, keep_col)
    nvalid = sum(valid_per_file.values())
    kept = int(written["kept"].sum())
    if int(written["rows"].sum()) != nvalid:
        raise RuntimeError(f"dedup wrote {int(written['rows'].sum())} grouped rows of {nvalid} valid ones")
    stats.update({"distinct_hashes": int(written["distinct"].sum()), "groups": int(written["groups"].sum()),
                  "groups_with_duplicates": int(written["dups"].sum()), "largest_group": max(largest, 1) if nvalid else 0,
                  "kept": kept, "rows_grouped": nvalid, "removed_as_duplicates": nvalid - kept})


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


__all__ = ["ColumnFile", "list_files", "write_files"]


# --- per-partition steps of the Dask job (each after a shuffle that puts equal keys in one partition) ---------


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
    """Grouped rows (row, uid, group[, key][, score]) holding whole groups -> the same but the score, with
    `keep`: the smallest row (`first`), or the highest score with NaN last and ties to the smallest row."""
    carried = [c for c in part.columns if c != "score"]
    if not len(part):
        out = part[carried].copy()
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
    out = part[carried].copy()
    out["keep"] = k
    return out


def kept_meta(key: str | None = None):
    import pandas as pd

    cols = {"row": pd.Series(dtype="int64"), "uid": pd.Series(dtype=STR), "group": pd.Series(dtype="int64")}
    if key:
        cols[key] = keys_meta(key)[key]
    return pd.DataFrame({**cols, "keep": pd.Series(dtype="bool")})


def group_sizes(part):
    """Grouped rows holding whole groups -> (groups, groups with 2+ rows, largest, kept) of this partition."""
    import pandas as pd

    sizes = part.groupby("group").row.count() if len(part) else pd.Series([], dtype="int64")
    return pd.DataFrame({"groups": [len(sizes)], "dups": [int((sizes > 1).sum())],
                         "largest": [int(sizes.max()) if len(sizes) else 0], "kept": [int(part.keep.sum()) if len(part) else 0]})
