"""`curate stage`: compute per-sample signals in one pass over the pool's shards.

Each shard is one task: its tar is read once, each image decoded once for every image signal of the run,
and each signal written to `POOL/columns/<signal>/{shard:08d}.parquet` (uid, value, status), whole or not at
all. A shard whose column files all exist is skipped, so a killed stage resumes where it stopped and ends
with the same files. Bad images never stop a stage: each sample gets `ok` or the reason, and per shard and
signal, samples in = ok + failed.

Signals so far: `phash` (bit-equal to imagehash's phash) and `sha256` (of the image bytes). CLIP,
aesthetic and language-over-shards come next (issue 3).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.atomic import atomic_path, write_json
from curate.engines import Engine
from curate.pool import Pool, Shard
from curate.signals.decode import DecodeLimits, decode_image
from curate.signals.phash import phash
from curate.signals.sha256 import sha256_hex
from curate.uids import UidError, hex_to_pair
from curate.wds import ReadReport, iter_samples

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
#: signal -> (needs a decoded image, column type)
SIGNALS = {"phash": (True, pa.string()), "sha256": (False, pa.string())}


class StageError(ValueError):
    """Unknown signal names, or a pool without shards."""


@dataclass(frozen=True)
class StageTask:
    shard: Shard
    signals: tuple[str, ...]
    columns_root: str
    limits: DecodeLimits


def column_file(columns_root: str, signal: str, shard_id: int) -> Path:
    return Path(columns_root) / signal / f"{shard_id:08d}.parquet"


def _uid(sample) -> str | None:
    try:
        uid = json.loads(sample.files["json"]).get("uid")
        hex_to_pair(uid)
        return uid.lower()
    except (KeyError, ValueError, AttributeError, TypeError, UidError):
        return None


def stage_shard(task: StageTask) -> dict:
    """Compute the signals of one shard (or skip it when its column files are all there)."""
    outputs = {s: column_file(task.columns_root, s, task.shard.shard_id) for s in task.signals}
    if all(p.exists() for p in outputs.values()):
        return {"shard": task.shard.shard_id, "skipped": True}
    decode = any(SIGNALS[s][0] for s in task.signals)
    rows = {s: {"uid": [], s: [], "status": []} for s in task.signals}
    report = ReadReport()
    no_uid = 0
    for sample in iter_samples(task.shard.tar, report):
        uid = _uid(sample)
        if uid is None:
            no_uid += 1  # cannot be keyed; counted in the stats, not in the columns
            continue
        data = next((sample.files[e] for e in IMAGE_EXTS if e in sample.files), None)
        decoded = decode_image(data, task.limits, forms=("L",)) if decode and data is not None else None
        for s in task.signals:
            if data is None:
                value, status = None, "no_image"
            elif s == "sha256":
                value, status = sha256_hex(data), "ok"
            elif decoded.ok:
                value, status = phash(decoded.luminance), "ok"
            else:
                value, status = None, decoded.status
            rows[s]["uid"].append(uid)
            rows[s][s].append(value)
            rows[s]["status"].append(status)
    for s, path in outputs.items():
        table = pa.table({"uid": pa.array(rows[s]["uid"], pa.string()), s: pa.array(rows[s][s], SIGNALS[s][1]),
                          "status": pa.array(rows[s]["status"], pa.string())})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    return {
        "shard": task.shard.shard_id,
        "skipped": False,
        "samples": report.samples,
        "samples_without_uid": no_uid,
        "status": {s: dict(Counter(rows[s]["status"])) for s in task.signals},
        "read_error": report.error,
    }


def run_stage(pool: Pool, signals: list[str], engine: Engine, limits: DecodeLimits | None = None) -> dict:
    unknown = [s for s in signals if s not in SIGNALS]
    if unknown:
        raise StageError(f"unknown signal(s) {', '.join(unknown)}; available now: {', '.join(SIGNALS)}")
    shards = [s for s in pool.shards() if s.stats]
    if not shards:
        raise StageError(f"{pool.root}: no whole shards in {pool.shards_dir} (run `curate download` first)")
    start = time.perf_counter()
    root = str(pool.root / "columns")
    tasks = [StageTask(s, tuple(signals), root, limits or DecodeLimits()) for s in shards]
    results = engine.map(stage_shard, tasks, desc=f"stage {','.join(signals)}")
    computed = [r for r in results if not r["skipped"]]
    totals: dict[str, Counter] = {s: Counter() for s in signals}
    for r in computed:
        for s in signals:
            totals[s].update(r["status"][s])
    seconds = time.perf_counter() - start
    samples = sum(r["samples"] for r in computed)
    stats = {
        "signals": signals,
        "shards": len(shards),
        "shards_computed": len(computed),
        "shards_skipped": len(results) - len(computed),
        "samples": samples,
        "samples_without_uid": sum(r["samples_without_uid"] for r in computed),
        "per_signal": {s: {"ok": totals[s].get("ok", 0), "failed": {k: v for k, v in totals[s].items() if k != "ok"}} for s in signals},
        "read_errors": {f"{r['shard']:08d}.tar": r["read_error"] for r in computed if r["read_error"]},
        "seconds": round(seconds, 3),
        "images_per_second": round(samples / seconds, 1) if seconds > 0 else None,
    }
    write_json(pool.root / "columns" / "stage_stats.json", stats)
    return stats


def read_signal(pool: Pool, signal: str) -> pa.Table:
    """All of a signal's column files, in shard order."""
    files = sorted((pool.root / "columns" / signal).glob("*.parquet"))
    files = [f for f in files if not f.name.startswith(".")]
    if not files:
        raise StageError(f"{pool.root}: no '{signal}' columns; run `curate stage --signals {signal}` first")
    return pa.concat_tables([pq.read_table(f) for f in files])


__all__ = ["SIGNALS", "StageError", "read_signal", "run_stage", "stage_shard"]
