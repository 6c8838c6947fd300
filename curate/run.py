"""`curate run`: filter a pool into a DataComp subset file, a stats file, and (with shards) new shards.

Partitions are filtered independently on the chosen engine; the only pool-wide step is resolving
fraction thresholds (curate.rank). Results come back in partition order and the subset is sorted, so every
engine writes the same bytes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.atomic import write_json
from curate.columns import read_columns
from curate.engines import Engine
from curate.pool import Partition, Pool, partition_schema
from curate.rank import value_at_descending_rank
from curate.signals.language import LANGUAGE_COLUMNS
from curate.signals.text_columns import language_columns, text_as_utf8
from curate.subset import write_subset
from curate.uids import UID_DTYPE, uids_to_pairs, valid_uid_mask
from filters.base import Filter, RankRequest

SIGNAL_COLUMNS = set(LANGUAGE_COLUMNS)


@dataclass(frozen=True)
class PartitionJob:
    partition: Partition
    filters: tuple[Filter, ...]
    language_cache: str | None
    fasttext_model: str | None
    pool_root: str = ""


def load_table(job: PartitionJob, columns: list[str]) -> pa.Table:
    """The partition's `uid` and `columns`, with computed signals joined in when the metadata lacks them."""
    present = set(partition_schema(job.partition.path).names)
    wanted_signals = [c for c in columns if c in SIGNAL_COLUMNS and c not in present]
    meta_cols = ["uid"] + [c for c in columns if c != "uid" and c not in wanted_signals]
    if wanted_signals and "text" not in meta_cols:
        meta_cols.append("text")
    table = read_columns(job.pool_root, job.partition.path, list(dict.fromkeys(meta_cols)))
    if "text" in table.column_names:
        table = table.set_column(table.column_names.index("text"), "text", text_as_utf8(table.column("text")))
    if wanted_signals:
        # Named by partition kind, so metadata parts never collide with per-shard column files.
        cache = f"{job.language_cache}/{job.partition.kind}-{job.partition.name}.parquet" if job.language_cache else None
        lang = language_columns(table.column("uid"), table.column("text"), cache, job.fasttext_model)
        for c in LANGUAGE_COLUMNS:
            table = table.append_column(c, lang.column(c))
    return table


def filter_partition(job: PartitionJob) -> dict:
    """Apply the filter steps in order to one partition; return the kept uids and per-step counts."""
    columns = sorted({c for f in job.filters for c in f.columns})
    table = load_table(job, columns)
    n = table.num_rows
    steps = []
    valid = valid_uid_mask(table.column("uid"))
    steps.append(_step_counts("valid_uid", n, valid, {"invalid_uid": ~valid}, {"invalid_uid": int((~valid).sum())}))
    keep = valid
    for f in job.filters:
        rows_in = int(keep.sum())
        sub = table.filter(pa.array(keep))
        result = f.apply(sub)
        kept_sub = result.keep
        failed = {rule: mask for rule, mask in result.failed.items()}
        steps.append(_step_counts(f.name, rows_in, kept_sub, failed, result.first_failed_rule()))
        idx = np.flatnonzero(keep)
        keep = np.zeros(n, dtype=bool)
        keep[idx[kept_sub]] = True
    kept_uids = uids_to_pairs(table.column("uid").filter(pa.array(keep))) if keep.any() else np.zeros(0, UID_DTYPE)
    return {"partition": job.partition.name, "rows": n, "steps": steps, "uids": kept_uids}


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


def resolve_filters(engine: Engine, paths: list[str], filters: list[Filter], pool_root: str = "") -> tuple[list[Filter], list[dict]]:
    """Resolve every pool-wide rank the filters ask for, and bind them."""
    resolved: dict[RankRequest, float] = {}
    notes = []
    for f in filters:
        for req in f.rank_requests():
            if req in resolved:
                continue
            value, rank, total = value_at_descending_rank(engine, paths, req.column, req.fraction, pool_root)
            resolved[req] = value
            notes.append({"column": req.column, "fraction": req.fraction, "rank": rank, "pool_rows": total, "threshold": value})
    return [f.bind(resolved) for f in filters], notes


def merge_steps(results: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for res in results:
        for i, step in enumerate(res["steps"]):
            if i == len(merged):
                merged.append({"filter": step["filter"], "rows_in": 0, "kept": 0, "rejected": 0, "rejected_by_first_rule": {}, "failed_rule": {}})
            m = merged[i]
            for k in ("rows_in", "kept", "rejected"):
                m[k] += step[k]
            for key in ("rejected_by_first_rule", "failed_rule"):
                for rule, count in step[key].items():
                    m[key][rule] = m[key].get(rule, 0) + count
    return merged


def run_filters(
    pool: Pool,
    filters: list[Filter],
    output: str | Path,
    engine: Engine,
    *,
    fasttext_model: str | None = None,
    cache_signals: bool = True,
) -> dict:
    """Filter the pool and write OUT/subset.npy and OUT/stats.json; return the stats."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    partitions = pool.partitions()
    paths = [p.path for p in partitions]
    bound, thresholds = resolve_filters(engine, paths, filters, str(pool.root))
    language_cache = str(pool.column_dir("language")) if cache_signals else None
    jobs = [PartitionJob(p, tuple(bound), language_cache, fasttext_model, str(pool.root)) for p in partitions]
    results = engine.map(filter_partition, jobs, desc="filter partitions")
    uids = np.concatenate([r["uids"] for r in results]) if results else np.zeros(0, UID_DTYPE)
    subset_path = write_subset(output / "subset.npy", uids)
    steps = merge_steps(results)
    rows = sum(r["rows"] for r in results)
    stats = {
        "pool": str(pool.root),
        "engine": engine.name,
        "partitions": len(partitions),
        "rows_in": rows,
        "kept": int(len(uids)),
        "rejected": rows - int(len(uids)),
        "filters": [{"name": f.name, **f.params()} for f in bound],
        "thresholds": thresholds,
        "steps": steps,
        "subset_file": str(subset_path),
        "subset_sha256": hashlib.sha256(subset_path.read_bytes()).hexdigest(),
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_json(output / "stats.json", stats)
    return stats
