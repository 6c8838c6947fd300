"""What the pool's shards say happened to each row, and the download's counts, each from its own source.

A shard is finished when img2dataset wrote its `{shard}_stats.json` (after closing the tar and parquet).
img2dataset writes that file in place, so a kill can leave half of it: an unreadable stats file marks an
unfinished shard, which the next run downloads again. In an object store (s3fs) each of the three files
appears only when its writer closes it, whole, so a killed shard leaves no stats at all; the tar and parquet
a kill or an error left are rewritten by the next run. The outcome of a row is its status in the newest
finished shard that lists it (a retried row is listed again in a later shard).

The counts add up only if the pool is what the plans say: successes and failures come from the shards,
refusals from the URL list, `not_attempted` from the accepted rows no finished shard lists. Nothing is
computed by subtraction, so a shard that lists rows the URL list does not hold breaks the sum.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.download.reasons import REFUSED_AT_FETCH, short_reason

SUCCESS = "success"
FAILED_TO_DOWNLOAD = "failed_to_download"
FAILED_TO_RESIZE = "failed_to_resize"


def shard_id(path: Path) -> int:
    return int(path.name.split("_")[0].split(".")[0])


def finished_shards(shards_dir: Path) -> dict[int, dict]:
    """{shard id: its stats} for every shard whose stats file reads whole; a half-written one is removed.
    `shards_dir` is a Path, or a UPath for a pool in an object store."""
    done = {}
    for stats_file in sorted(shards_dir.glob("*_stats.json"), key=lambda p: p.name):
        try:
            stats = json.loads(stats_file.read_text())
            if not isinstance(stats, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            print(f"download: {stats_file} is unreadable ({e}); shard {stats_file.name.split('_')[0]} will be downloaded again")
            stats_file.unlink()
            continue
        done[shard_id(stats_file)] = stats
    return done


@dataclass
class Outcomes:
    """One row per uid any finished shard lists: its latest status and error message."""

    table: pa.Table  # uid, status, error_message
    listed_rows: int  # rows over all finished shards, a retried uid once per shard
    inconsistent: list[str] = field(default_factory=list)  # shards whose parquet and stats disagree


def read_outcomes(shards_dir: Path, done: dict[int, dict]) -> Outcomes:
    tables, inconsistent = [], []
    for sid in sorted(done):
        path = shards_dir / f"{sid:08d}.parquet"
        try:
            t = storage.read_parquet(path, columns=["uid", "status", "error_message"])
        except Exception as e:  # a finished shard whose table is gone or broken: its rows cannot be counted
            inconsistent.append(f"{path.name}: {e}")
            continue
        if t.num_rows != int(done[sid].get("count", -1)):
            inconsistent.append(f"{path.name}: {t.num_rows} rows but its stats count {done[sid].get('count')}")
        tables.append(t.cast(pa.schema([("uid", pa.string()), ("status", pa.string()), ("error_message", pa.string())])))
    if not tables:
        empty = pa.table({"uid": pa.array([], pa.string()), "status": pa.array([], pa.string()),
                          "error_message": pa.array([], pa.string())})
        return Outcomes(empty, 0, inconsistent)
    rows = pa.concat_tables(tables)
    # shards in id order, so the last status of a uid is its newest
    latest = rows.group_by("uid", use_threads=False).aggregate([("status", "last"), ("error_message", "last")])
    latest = latest.rename_columns(["uid", "status", "error_message"])
    return Outcomes(latest, rows.num_rows, inconsistent)


def reasons_of(outcomes: pa.Table, status: str) -> list[str]:
    """The short reason of every row with this latest status, in table order."""
    rows = outcomes.filter(pc.equal(outcomes.column("status"), status))
    return [short_reason(m) for m in rows.column("error_message").to_pylist()]


def summarize(input_rows: int, refused: Counter, accepted_uids: pa.Array, outcomes: Outcomes, shards: int,
              failed_shards: list[int], retried: int) -> dict:
    """The download's counts; `reconciled` is True only when every input row is in exactly one bucket."""
    status = outcomes.table.column("status")
    counts = Counter({d["values"]: d["counts"] for d in pc.value_counts(status).to_pylist()})
    failure_reasons = Counter(reasons_of(outcomes.table, FAILED_TO_DOWNLOAD) + reasons_of(outcomes.table, FAILED_TO_RESIZE))
    refused = Counter(refused)
    refused_at_fetch = {r: failure_reasons.pop(r) for r in REFUSED_AT_FETCH if r in failure_reasons}
    refused.update(refused_at_fetch)
    unknown_status = sum(v for k, v in counts.items() if k not in (SUCCESS, FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE))
    listed = pc.is_in(accepted_uids, value_set=outcomes.table.column("uid"))
    not_attempted = len(accepted_uids) - (pc.sum(listed).as_py() or 0)
    summary = {
        "input_rows": input_rows,
        "refused": dict(sorted(refused.items())),
        "refused_total": int(sum(refused.values())),
        "success": int(counts.get(SUCCESS, 0)),
        "failed_to_download": int(counts.get(FAILED_TO_DOWNLOAD, 0)) - int(sum(refused_at_fetch.values())),
        "failed_to_resize": int(counts.get(FAILED_TO_RESIZE, 0)),
        "not_attempted": int(not_attempted),
        "failure_reasons": dict(failure_reasons.most_common()),
        "shards": shards,
        "failed_shards": failed_shards,
        "inconsistent_shards": outcomes.inconsistent,
        "retried": retried,
    }
    total = (summary["refused_total"] + summary["success"] + summary["failed_to_download"]
             + summary["failed_to_resize"] + summary["not_attempted"] + unknown_status)
    summary["reconciled"] = bool(input_rows == total and not unknown_status and not outcomes.inconsistent)
    return summary
