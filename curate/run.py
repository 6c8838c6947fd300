"""`curate run`: filter a pool into a DataComp subset file, a stats file, and (with shards) new shards.

Partitions are filtered independently on the chosen engine. What a filter needs from the whole pool (a
fraction threshold, k-means centroids, MetaCLIP entry counts, a file the user named) it asks for with a pool
request (filters.base); `resolve_filters` computes each request once, on the engine, and binds the values,
repeating while bound filters ask for more. Each partition's result is folded into running totals as its task
finishes (curate.run_merge: the driver holds the totals, not every file's result), by rules that give the same
bytes in any order of arrival, and the subset is sorted, so every engine writes the same bytes. Each partition
task spills its sorted kept uids into a folder inside the output (curate.spill), which the driver merges into
subset.npy a chunk of each at a time: the driver's memory grows neither with the rows kept nor with the files.

Besides the subset, each partition reports exact score ranges, a uid-hash sample of every thresholded score
(for the report's histograms) and uid-hash-chosen examples kept and rejected by each step; a threshold
outside its score's observed range is a warning (stats.json and stderr). OUT/report.html shows it all.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.assets import AssetError, load_matrices
from curate import storage
from curate.atomic import write_json
from curate.columns import read_columns
from curate.engines import Engine
from curate.image_sizes import SIZE_COLUMNS, fill_sizes, shard_parquets
from curate.pool import (COLUMN_ALIASES, Partition, Pool, PoolError, names_partition, partition_num_rows,
                         partition_schema)
from curate.rank import value_at_descending_rank
from curate.run_merge import RunTotals
from curate.signals.language import LANGUAGE_SIGNALS, detector
from curate.signals.text_columns import language_columns, text_as_utf8
from curate.spill import fewer_runs, file_runs, remove_stale_spills, spill_folder, write_run
from curate.subset import sort_pairs, write_subset_runs
from curate.uids import parse_uids, valid_uid_mask
from filters.base import FileRequest, Filter, FilterConfigError, GatherRequest, RankRequest
from filters.rules import _splitmix64, float_column

#: computed column -> the language signal that gives it (curate.signals.language)
SIGNAL_COLUMNS = {c: signal for signal, cols in LANGUAGE_SIGNALS.items() for c in cols}


@dataclass(frozen=True)
class PartitionJob:
    partition: Partition
    filters: tuple[Filter, ...]
    signal_cache: str | None  # POOL/columns: computed text signals are cached under it
    fasttext_model: str | None
    pool_root: str = ""
    score_columns: tuple[str, ...] = ()
    examples: int = 0  # kept and rejected examples per step (0: none)
    score_sample: int = 0  # values per thresholded score, for histograms
    spill: str | None = None  # a curate.spill folder: the kept uids go there as run `index` (None: returned)
    index: int = 0
    sample_below: int = 0  # only rows whose uid hash is below this enter the score sample (0: any row)


@dataclass(frozen=True)
class GatherJob:
    partition: Partition
    request: GatherRequest
    signal_cache: str | None  # POOL/columns: computed text signals are cached under it
    fasttext_model: str | None
    pool_root: str = ""


EXAMPLE_SEED = 0x5EED


def load_table(job, columns: list[str]) -> pa.Table:
    """The partition's `uid` and `columns`, with computed signals joined in when the metadata lacks them, and
    image sizes from the downloader's shard parquet files when the metadata lacks them (curate.image_sizes)."""
    computed = [c for c in columns if c in SIGNAL_COLUMNS or c in SIZE_COLUMNS]
    present = set(partition_schema(job.partition.path).names) if computed else set()  # (else: no footer read)
    wanted_signals = [c for c in computed if c in SIGNAL_COLUMNS and c not in present]
    sizes = [c for c in computed if c in SIZE_COLUMNS and c not in present] if computed and shard_parquets(job.pool_root) else []
    meta_cols = ["uid"] + [c for c in columns if c != "uid" and c not in wanted_signals and c not in sizes]
    if wanted_signals and "text" not in meta_cols:
        meta_cols.append("text")
    table = read_columns(job.pool_root, job.partition.path, list(dict.fromkeys(meta_cols)))
    if any(c in SIZE_COLUMNS for c in columns) and job.partition.kind == "metadata":
        table = fill_sizes(job.pool_root, table, sizes)
    if "text" in table.column_names:
        table = table.set_column(table.column_names.index("text"), "text", text_as_utf8(table.column("text")))
    if wanted_signals:
        # Named by partition kind, so metadata parts never collide with per-shard column files.
        # `shard-<id>` belongs to `curate stage` (rows of the tar); a downloader parquet partition has
        # failed rows too, so its cache gets a name of its own.
        prefix = "metadata" if job.partition.kind == "metadata" else "downloader"
        for signal in dict.fromkeys(SIGNAL_COLUMNS[c] for c in wanted_signals):
            cache = f"{job.signal_cache}/{signal}/{prefix}-{job.partition.name}.parquet" if job.signal_cache else None
            lang = language_columns(table.column("uid"), table.column("text"), cache, job.fasttext_model, signal)
            for c in lang.column_names:
                table = table.append_column(c, lang.column(c))
    return table


@names_partition(lambda job: job.partition.path)
def gather_partition(job: GatherJob):
    """One partition's part of a GatherRequest: its `map` on the rows with a valid uid."""
    table = load_table(job, ["uid", *job.request.columns])
    valid = valid_uid_mask(table.column("uid"))
    if not valid.all():
        table = table.filter(pa.array(valid))
    return job.request.step.map(table)


def _has_text(path: str) -> bool:
    names = set(partition_schema(path).names)
    return "text" in names or "caption" in names


@names_partition(lambda job: job.partition.path)
def filter_partition(job: PartitionJob) -> dict:
    """Apply the filter steps in order to one partition; return the kept uids (sorted; with `job.spill`, where
    they were spilled), per-step counts, score summaries and examples.

    Only the columns the steps and scores need are read: a caption that only an example shows is read later,
    for the few examples the whole pool's report keeps (`fill_example_texts`)."""
    columns = sorted({c for f in job.filters for c in f.columns} | set(job.score_columns))
    table = load_table(job, columns)
    n = table.num_rows
    steps = []
    valid, pairs = parse_uids(table.column("uid"))  # one parse: the mask now, the kept pairs at the end
    all_valid = bool(valid.all())  # the usual case: no row is dropped, so nothing is copied
    valid_table = table if all_valid else table.filter(pa.array(valid))
    steps.append(_step_counts("valid_uid", n, valid, {"invalid_uid": ~valid}, {"invalid_uid": int((~valid).sum())}))
    keep = valid
    hashes = pair_hash(pairs) if job.examples or job.score_sample else None  # per row (invalid rows: unused)
    examples = []
    for f in job.filters:
        rows_in = int(keep.sum())
        idx = np.flatnonzero(keep)
        sub = table if rows_in == n else table.filter(pa.array(keep))
        result = f.apply(sub)
        kept_sub = np.asarray(result.keep, dtype=bool)
        failed = {rule: mask for rule, mask in result.failed.items()}
        step = _step_counts(f.name or f.label(), rows_in, kept_sub, failed, result.first_failed_rule())
        step["label"] = f.label()
        if result.parts:
            step["parts"] = result.parts
        steps.append(step)
        if job.examples:
            examples.append(_examples(job, f, sub, result, hashes if rows_in == n else hashes[idx], idx))
        keep = np.zeros(n, dtype=bool)
        keep[idx[kept_sub]] = True
    kept_uids = sort_pairs(pairs[keep])  # sorted runs: the pool-wide sort of their concatenation is quick
    valid_hashes = hashes if hashes is None or all_valid else hashes[valid]
    scores = {c: _score_summary(valid_table, c, job.score_sample, valid_hashes, job.sample_below) for c in job.score_columns}
    kept = {"run": write_run(job.spill, job.index, kept_uids)} if job.spill else {"uids": kept_uids}
    return {"partition": job.partition.name, "rows": n, "steps": steps, **kept, "scores": scores,
            "examples": examples, "repeated_uid_rows": repeated_rows(pairs if all_valid else pairs[valid])}


def pair_hash(pairs: np.ndarray) -> np.ndarray:
    """A uint64 hash of each uid from its two words (so the same on every partitioning of the pool and for
    either case of hex): it chooses both a step's examples and the score histograms' sample."""
    return _splitmix64(_splitmix64(pairs["f0"] ^ np.uint64(EXAMPLE_SEED)) ^ pairs["f1"])


def distinct_pairs(pairs: np.ndarray) -> np.ndarray:
    """Sorted uid pairs, each once."""
    pairs = sort_pairs(pairs)
    if len(pairs) < 2:
        return pairs
    new = np.ones(len(pairs), dtype=bool)
    new[1:] = (pairs["f0"][1:] != pairs["f0"][:-1]) | (pairs["f1"][1:] != pairs["f1"][:-1])
    return pairs if new.all() else pairs[new]


def repeated_rows(pairs: np.ndarray) -> int:
    """How many of `pairs` repeat an earlier one. Only rows whose top 32 bits repeat (all of a repeated uid's,
    and by chance a few others) are compared whole, so a partition without repeats costs one sort of 32-bit
    numbers."""
    top = (pairs["f0"] >> np.uint64(32)).astype(np.uint32)
    ordered = np.sort(top)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return 0
    candidates = pairs[np.isin(top, ordered[1:][same])]
    return len(candidates) - len(distinct_pairs(candidates))


def smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest of `values`, in ascending order of value (a partial sort: k is small).

    For uint64 hashes (uniform), the rows below a cut that about 2k + 64 of them pass are partitioned instead
    of all rows; when fewer than k pass, all rows are, so the answer never depends on the cut."""
    n = len(values)
    if n <= k:
        idx = np.arange(n)
    else:
        idx = None
        if values.dtype == np.uint64 and 4 * (2 * k + 64) < n:
            below = np.flatnonzero(values < np.uint64(((2 * k + 64) << 64) // n))
            if len(below) >= k:
                idx = below[np.argpartition(values[below], k - 1)[:k]] if len(below) > k else below
        if idx is None:
            idx = np.argpartition(values, k)[:k]
    return idx[np.argsort(values[idx], kind="stable")]


def _score_summary(table: pa.Table, column: str, sample: int, hashes: np.ndarray | None, below: int = 0) -> dict:
    """Rows, missing, min and max of a score; with `sample`, the values of the (at most) `sample` rows of smallest
    uid hash, among those below `below` when set."""
    values = float_column(table.column(column))
    ok = ~np.isnan(values)
    out = {"rows": int(len(values)), "missing": int((~ok).sum()),
           "min": float(values[ok].min()) if ok.any() else None, "max": float(values[ok].max()) if ok.any() else None}
    if sample:
        rows = np.flatnonzero(ok & (hashes < np.uint64(below))) if below else np.flatnonzero(ok)
        rows = rows[smallest(hashes[rows], sample)]
        out["sample_hash"], out["sample"] = hashes[rows], values[rows]
    return out


def sample_cut(pool_rows: int, sample: int) -> int:
    """The uid-hash bound under which a pool of `pool_rows` rows has about 1.1 x `sample` + 64 rows (hashes are
    uniform): each partition sends only its rows below it, so what the driver gathers for the histograms stays
    near `sample` values however many partitions there are, and the `sample` smallest hashes of the pool are
    among them unless most scores are missing (then the sample is what lies below the bound)."""
    return min(2**64 - 1, ((sample * 11 // 10 + 64) << 64) // max(1, pool_rows))


def _example_columns(f: Filter, table: pa.Table) -> list[str]:
    cols = [c for c, _ in f.score_thresholds()]
    for c in f.columns:
        if c in table.column_names and c not in cols and c not in ("text", "uid"):
            t = table.schema.field(c).type
            if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t):
                cols.append(c)
    return cols


def _examples(job: PartitionJob, f: Filter, sub: pa.Table, result, hashes: np.ndarray, rows_in_file: np.ndarray) -> dict:
    """Up to job.examples kept and rejected rows of this step, those with the smallest uid hashes. Without a
    caption column in `sub`, an example carries its file and row instead (`fill_example_texts` reads it)."""
    keep = np.asarray(result.keep, dtype=bool)
    cols = _example_columns(f, sub)
    has_text = "text" in sub.column_names
    out = {}
    for kind, mask in (("kept", keep), ("rejected", ~keep)):
        rows = np.flatnonzero(mask)
        rows = rows[smallest(hashes[rows], job.examples)]
        items = []
        for r in rows:
            reason = next((rule for rule, m in result.failed.items() if np.asarray(m)[r]), None) if kind == "rejected" else None
            values = {}
            for c in cols:
                v = sub.column(c)[int(r)].as_py()
                values[c] = None if isinstance(v, float) and math.isnan(v) else v
            item = {"hash": int(hashes[r]), "uid": sub.column("uid")[int(r)].as_py(),
                    "text": sub.column("text")[int(r)].as_py() if has_text else None, "values": values, "reason": reason}
            if not has_text:
                item["text_at"] = (job.partition.path, int(rows_in_file[r]))
            items.append(item)
        out[kind] = items
    return out


@dataclass(frozen=True)
class CaptionJob:
    path: str
    rows: tuple[int, ...]
    pool_root: str = ""


def read_captions(job: CaptionJob) -> list[str | None]:
    """The captions of a few rows of one partition. The caption column is decoded a batch at a time only up
    to the last row wanted (half the file, on average, for one example), not whole."""
    import pyarrow.parquet as pq

    names = set(partition_schema(job.path).names)
    name = next((c for c in ("text", *COLUMN_ALIASES["text"]) if c in names), None)
    if name is None:
        return [None] * len(job.rows)
    batches, read = [], 0
    try:
        for batch in pq.ParquetFile(storage.arrow_source(job.path)).iter_batches(65536, columns=[name], use_threads=False):
            batches.append(batch.column(0))
            read += len(batch)
            if read > max(job.rows):
                break
        text = text_as_utf8(pa.chunked_array(batches, batches[0].type))
        return [text[r].as_py() for r in job.rows]
    except UnicodeDecodeError as e:
        raise PoolError(f"{job.path}: column {name!r} holds a caption that is not valid UTF-8 ({e})") from None


def fill_example_texts(examples: list[dict], engine: Engine, pool_root: str) -> list[dict]:
    """Give each example that carries `text_at` (file, row) its caption: one caption column is read per file
    that holds a chosen example (on the engine's workers), instead of every partition's."""
    wanted: dict[str, list[tuple[dict, int]]] = {}
    for st in examples:
        for kind in ("kept", "rejected"):
            for item in st[kind]:
                at = item.pop("text_at", None)
                if at is not None:
                    wanted.setdefault(at[0], []).append((item, at[1]))
    paths = [p for p in wanted if _has_text(p)]
    jobs = [CaptionJob(p, tuple(row for _, row in wanted[p]), pool_root) for p in paths]
    for path, captions in zip(paths, engine.map(read_captions, jobs, desc="example captions")):
        for (item, _), caption in zip(wanted[path], captions):
            item["text"] = caption
    return examples


def _step_counts(name: str, rows_in: int, keep: np.ndarray, failed: dict, first: dict) -> dict:
    kept = int(keep.sum())
    return {
        "filter": name,
        "rows_in": rows_in,
        "kept": kept,
        "rejected": rows_in - kept,
        "rejected_by_first_rule": {k: int(v) for k, v in first.items() if v},
        "failed_rule": {k: int(np.asarray(v).sum()) for k, v in failed.items() if np.asarray(v).any()},
    }


# --------------------------------------------------------------------------------------------------------
# Pool requests
# --------------------------------------------------------------------------------------------------------

MAX_ROUNDS = 8


def read_file_request(req: FileRequest):
    """What a FileRequest names: a numpy array, a float32 matrix from .npy/.pt files (curate.assets: a path, a
    glob or a comma list, loaded without running pickled code), or the non-comment lines of a text file."""
    if req.kind == "matrix":
        try:
            return load_matrices(req.path)
        except AssetError as e:
            raise FilterConfigError(str(e)) from None
    path = Path(req.path)
    if not path.is_file():
        raise FilterConfigError(f"{path}: file not found")
    try:
        if req.kind == "npy":
            return np.load(path, allow_pickle=False)
        if req.kind == "lines":
            return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise FilterConfigError(f"{path}: cannot read as {req.kind}: {e}") from e
    raise FilterConfigError(f"unknown file request kind {req.kind!r}")


def resolve_filters(engine: Engine, paths_or_partitions: list, filters: list[Filter], pool_root: str = "",
                    signal_cache: str | None = None, fasttext_model: str | None = None) -> tuple[list[Filter], list[dict]]:
    """Resolve every pool request the filters make, bind the values, and repeat while bound filters ask for more.

    Returns the bound filters and notes: one per fraction threshold (column, fraction, rank, pool rows,
    threshold), and one per other request (kind, key).
    """
    partitions = [p if isinstance(p, Partition) else Partition(Path(p).stem, str(p)) for p in paths_or_partitions]
    paths = [p.path for p in partitions]
    resolved: dict = {}
    notes: list[dict] = []
    filters = list(filters)
    for _ in range(MAX_ROUNDS):
        pending = []
        for f in filters:
            for req in f.requests():
                if req not in resolved and req not in pending:
                    pending.append(req)
        if not pending and resolved:
            break
        for req in pending:
            if isinstance(req, RankRequest):
                value, rank, total = value_at_descending_rank(engine, paths, req.column, req.fraction, pool_root)
                resolved[req] = value
                notes.append({"column": req.column, "fraction": req.fraction, "rank": rank, "pool_rows": total, "threshold": value})
            elif isinstance(req, FileRequest):
                resolved[req] = read_file_request(req)
                notes.append({"kind": "file", "key": req.path})
            elif isinstance(req, GatherRequest):
                jobs = [GatherJob(p, req, signal_cache, fasttext_model, pool_root) for p in partitions]
                parts = engine.map(gather_partition, jobs, desc=f"pool step {req.key}")
                resolved[req] = req.step.reduce(parts)
                notes.append({"kind": "gather", "key": req.key})
            else:
                raise TypeError(f"unknown pool request {req!r}")
        filters = [f.bind(resolved) for f in filters]
        if not pending:
            break
    else:
        raise RuntimeError(f"filters still ask for pool values after {MAX_ROUNDS} rounds")
    return filters, notes


# --------------------------------------------------------------------------------------------------------
# Warnings and provenance of the merged results
# --------------------------------------------------------------------------------------------------------


def range_warnings(filters: list[Filter], scores: dict, thresholds: list[dict]) -> list[str]:
    """A threshold outside its score's observed range (or not a number) keeps all or nothing: say so."""
    out = []
    for t in thresholds:
        if "fraction" in t and isinstance(t.get("threshold"), float) and math.isnan(t["threshold"]):
            out.append(f"{t['column']}: the top {t['fraction']:.0%} reaches past the rows that have a score "
                       f"(rank {t['rank']} of {t['pool_rows']}); the threshold is NaN and keeps nothing, as DataComp's")
    seen = set()
    for f in filters:
        for column, thr in f.score_thresholds():
            if (column, thr) in seen or column not in scores:
                continue
            seen.add((column, thr))
            s = scores[column]
            if thr is None or (isinstance(thr, float) and math.isnan(thr)):
                continue
            if s["min"] is None:
                out.append(f"{f.label()}: {column} has no values in the pool; the threshold {thr:g} keeps nothing")
            elif thr > s["max"]:
                out.append(f"{f.label()}: threshold {thr:g} is above every {column} in the pool "
                           f"(observed range {s['min']:.4g} .. {s['max']:.4g}); it keeps nothing")
            elif thr <= s["min"]:
                out.append(f"{f.label()}: threshold {thr:g} is at or below every {column} in the pool "
                           f"(observed range {s['min']:.4g} .. {s['max']:.4g}); it rejects only missing scores")
    return out


def language_models(filters: list[Filter], fasttext_model: str | None) -> dict:
    """For each language signal the filters read: which detector and model (file name, sha256) gave it."""
    read = {c for f in filters for c in f.columns}
    return {signal: detector(signal, fasttext_model).identity
            for signal, cols in LANGUAGE_SIGNALS.items() if read & set(cols)}


def run_filters(
    pool: Pool,
    filters: list[Filter],
    output: str | Path,
    engine: Engine,
    *,
    fasttext_model: str | None = None,
    cache_signals: bool = True,
    report: bool = True,
    recipe: dict | None = None,
    examples: int = 6,
    score_sample: int = 20000,
) -> dict:
    """Filter the pool and write OUT/subset.npy, OUT/stats.json and (with `report`) OUT/report.html; return the stats."""
    output = storage.path(output)  # a folder, or an object-store URL
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    partitions = pool.partitions()
    signal_cache = str(pool.root / "columns") if cache_signals else None
    bound, thresholds = resolve_filters(engine, partitions, filters, str(pool.root), signal_cache, fasttext_model)
    resolve_s = time.perf_counter() - start
    score_columns = tuple(dict.fromkeys(c for f in bound for c, _ in f.score_thresholds()))
    n_examples = examples if report else 0
    sample = score_sample if report else 0
    below = sample_cut(sum(partition_num_rows(p.path) for p in partitions), sample) if sample and score_columns else 0
    remove_stale_spills(output)  # left by a killed run
    with spill_folder(output) as spill:  # each task's sorted kept uids, merged from there in bounded chunks
        jobs = [PartitionJob(p, tuple(bound), signal_cache, fasttext_model, str(pool.root), score_columns, n_examples,
                             sample, spill, i, below) for i, p in enumerate(partitions)]
        totals = RunTotals(len(jobs), sample, examples)
        for i, result in engine.imap_unordered(filter_partition, jobs, desc="filter partitions"):
            totals.add(i, result)  # folded as it arrives: the driver never holds every partition's result
        # A uid the metadata repeats (in one file or across files) is one sample: it enters the subset once.
        kept_rows = sum(r["rows"] for r in totals.runs)
        subset_path, kept, subset_sha256 = write_subset_runs(output / "subset.npy", fewer_runs(file_runs(totals.runs), spill))
    collapsed = kept_rows - kept
    steps = totals.steps()
    if collapsed:
        steps.append({"filter": "unique_uid", "rows_in": kept_rows, "kept": kept, "rejected": collapsed,
                      "rejected_by_first_rule": {"repeated_uid": collapsed}, "failed_rule": {"repeated_uid": collapsed}})
    rows = totals.rows
    scores = totals.scores()
    warnings = range_warnings(bound, scores, [t for t in thresholds if "fraction" in t])
    for w in warnings:
        print(f"curate run: warning: {w}", file=sys.stderr)
    stats = {
        "pool": str(pool.root),
        "engine": engine.name,
        "partitions": len(partitions),
        "rows_in": rows,
        "kept": kept,
        "rejected": rows - kept,
        "filters": [{"name": f.name or f.label(), **f.params()} for f in bound],
        "language_models": language_models(bound, fasttext_model),
        # rows whose uid an earlier row of the same file has; kept rows dropped as a repeat of a kept uid
        "uid_repeats": {"rows_repeating_in_their_file": totals.repeated_uid_rows,
                        "kept_rows_collapsed": collapsed},
        "thresholds": [t for t in thresholds if "fraction" in t],
        "pool_steps": [t for t in thresholds if "fraction" not in t],
        "steps": steps,
        "scores": {c: {k: v for k, v in s.items() if k != "sample"} for c, s in scores.items()},
        "warnings": warnings,
        "subset_file": str(subset_path),
        "subset_sha256": subset_sha256,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if recipe:
        stats["recipe"] = recipe
    # stats.json is the same on every engine except `engine`, `seconds` and `subset_file`; the time each
    # phase took goes to timings.json beside it.
    timings = {"pool_steps": round(resolve_s, 3), "filter_partitions": round(time.perf_counter() - start - resolve_s, 3)}
    if report:
        from curate.report import write_report

        t = time.perf_counter()
        chosen = fill_example_texts(totals.chosen_examples(), engine, str(pool.root))
        stats["report"] = write_report(output, stats, bound, scores, chosen, pool)
        timings["report"] = round(time.perf_counter() - t, 3)
    timings["total"] = round(time.perf_counter() - start, 3)
    write_json(output / "timings.json", timings)
    write_json(output / "stats.json", stats)
    return stats
