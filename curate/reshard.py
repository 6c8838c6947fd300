"""`curate reshard`: new webdataset shards holding exactly a subset's samples, as DataComp's resharder.

A uid listed k times is written k times with keys `{uid}-{j}`. Two phases, both on the engine:
select (each input shard → a temporary tar of its selected samples, in input order) and pack (the
temporaries → output shards of exactly `shard_size` samples, the last one shorter). Output is the same
bytes on every engine. Every subset row is accounted for: written, not downloaded, or lost to a corrupt
input shard (named, with the samples it cost).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import atomic_path, remove_stale_temporaries, write_json
from curate.engines import Engine
from curate.paths import refuse_overlap
from curate.pool import Pool, Shard, read_partition
from curate.progress import Meter, rate
from curate.subset import SubsetFileError, read_subset, subset_counts
from curate.uids import UidError, hex_to_pair, uids_to_pairs, valid_uid_mask
from curate.wds import ReadReport, TarSampleWriter, iter_samples

OUTPUT_SHARD = "{:08d}.tar"


class ReshardError(ValueError):
    """The subset and the pool do not fit together (uids absent from the pool, an unusable output folder)."""


@dataclass(frozen=True)
class SelectTask:
    shard: Shard
    subset_path: str
    tmp_tar: str


def select_shard(task: SelectTask) -> dict:
    """Copy the selected samples of one input shard to a temporary tar; count everything seen."""
    subset = read_subset(task.subset_path)
    unique = np.unique(subset)
    report = ReadReport()
    found: list[int] = []
    written = 0
    no_uid = 0
    with atomic_path(task.tmp_tar) as tmp, open(tmp, "wb") as f:
        writer = TarSampleWriter(f)
        for sample in iter_samples(task.shard.tar, report):
            uid = _sample_uid(sample)
            if uid is None:
                no_uid += 1
                continue
            pair = np.array([hex_to_pair(uid)], dtype=subset.dtype)
            count = int(subset_counts(subset, pair)[0])
            if not count:
                continue
            found.append(int(np.searchsorted(unique, pair[0])))
            files = {ext: data for ext, data in sample.files.items()}
            for j in range(count):
                writer.write(f"{uid}-{j}", files)
            written += count
        writer.close()
    expected = task.shard.expected_successes()
    return {
        "shard": os.path.basename(task.shard.tar),
        "samples_read": report.samples,
        "skipped_members": report.skipped_members,
        "samples_without_uid": no_uid,
        "written": written,
        "found_subset_rows": found,
        "error": report.error,
        "expected_samples": expected,
    }


def _sample_uid(sample) -> str | None:
    raw = sample.files.get("json")
    if raw is None:
        return None
    try:
        uid = json.loads(raw).get("uid")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    if not isinstance(uid, str):
        return None
    try:
        hex_to_pair(uid)
    except UidError:
        return None
    return uid.lower()


@dataclass(frozen=True)
class PackTask:
    out_tar: str
    sources: tuple[tuple[str, int, int], ...]  # (temporary tar, first sample, end sample)


def pack_shard(task: PackTask) -> int:
    """Write one output shard from sample ranges of the temporary tars."""
    count = 0
    with atomic_path(task.out_tar) as tmp, open(tmp, "wb") as f:
        writer = TarSampleWriter(f)
        for path, start, stop in task.sources:
            report = ReadReport()
            for i, sample in enumerate(iter_samples(path, report)):
                if i >= stop:
                    break
                if i >= start:
                    writer.write(sample.key, sample.files)
                    count += 1
            if report.error:
                raise OSError(f"{path}: temporary tar unreadable ({report.error})")
        writer.close()
    out_tar = storage.path(task.out_tar)
    stats = out_tar.with_name(out_tar.stem + "_stats.json")
    write_json(stats, {"successes": count})
    return count


def plan_packs(counts: list[tuple[str, int]], out_dir: Path, shard_size: int) -> list[PackTask]:
    """Cut the concatenated temporaries into output shards of `shard_size` samples."""
    tasks: list[PackTask] = []
    sources: list[tuple[str, int, int]] = []
    filled = 0
    for path, n in counts:
        start = 0
        while start < n:
            take = min(n - start, shard_size - filled)
            sources.append((path, start, start + take))
            start += take
            filled += take
            if filled == shard_size:
                tasks.append(PackTask(str(out_dir / OUTPUT_SHARD.format(len(tasks))), tuple(sources)))
                sources, filled = [], 0
    if sources:
        tasks.append(PackTask(str(out_dir / OUTPUT_SHARD.format(len(tasks))), tuple(sources)))
    return tasks


@dataclass(frozen=True)
class UidLookupTask:
    path: str
    subset_path: str


def find_subset_rows(task: UidLookupTask) -> np.ndarray:
    """Indices into the subset's unique uids that this partition holds."""
    subset = np.unique(read_subset(task.subset_path))
    uids = read_partition(task.path, ["uid"]).column("uid")
    uids = uids.filter(valid_uid_mask(uids))
    pairs = uids_to_pairs(uids)
    hit = subset_counts(subset, pairs) > 0
    return np.searchsorted(subset, pairs[hit]).astype(np.int64)


def successful_uids(shard: Shard) -> set[str]:
    """uids img2dataset says it wrote into this shard (from its parquet), for blaming a corrupt shard."""
    if not shard.parquet:
        return set()
    try:
        t = pq.ParquetFile(storage.arrow_source(shard.parquet)).read(columns=["uid", "status"])
    except Exception:
        return set()
    ok = t.filter(pc.equal(t.column("status"), "success"))
    return {u.lower() for u in ok.column("uid").to_pylist() if isinstance(u, str)}


#: written before the output folder is touched, removed once reshard_stats.json is written: while it is
#: there, the folder holds an unfinished reshard, which a rerun redoes without asking for --overwrite
UNFINISHED = ".reshard-unfinished"


def _is_output(p: Path) -> bool:
    return p.suffix == ".tar" or p.name.endswith("_stats.json") or p.name == "sizes.json"


def prepare_output(out_dir: Path, overwrite: bool) -> bool:
    """Empty `out_dir` of a previous reshard's files; returns True when it was an unfinished one.

    A finished reshard's shards are replaced only with `overwrite`; a killed one's always (its marker says so).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    unfinished = (out_dir / UNFINISHED).exists()
    old = [p for p in out_dir.iterdir() if _is_output(p)] if out_dir.is_dir() else []  # (an empty prefix is no folder)
    if old and not (overwrite or unfinished):
        raise ReshardError(f"{out_dir}: already holds shards; pass --overwrite to replace them")
    write_json(out_dir / UNFINISHED, {"note": "a reshard is writing this folder; rerun it to finish"})
    for p in old:
        p.unlink()
    storage.remove_tree(out_dir / "_tmp")
    remove_stale_temporaries(out_dir)
    return unfinished


#: the reshard's bars: subset samples found per pool shard read, then samples written per output shard
SELECT_METER = Meter("reshard: select", unit="shards", count=lambda r: {"samples": r["written"]})
WRITE_METER = Meter("reshard: write", unit="shards", count=lambda n: {"samples": n},
                    show=lambda c, s: f"{c.get('samples', 0):,} samples written, {rate(c.get('samples', 0), s, 'samples')}")


def reshard(
    pool: Pool,
    subset_path: str | os.PathLike,
    output: str | os.PathLike,
    engine: Engine,
    *,
    shard_size: int = 10000,
    overwrite: bool = False,
) -> dict:
    """Write the subset's samples from the pool's shards into `output`; return the reconciled counts."""
    if shard_size < 1:
        raise ReshardError("--shard-size must be at least 1")
    refuse_overlap({"the pool": pool.root, "the subset file": subset_path}, output)
    subset_path = str(subset_path)
    subset = read_subset(subset_path)
    subset_sha256 = hashlib.sha256(storage.path(subset_path).read_bytes()).hexdigest()
    unique, multiplicity = np.unique(subset, return_counts=True)
    all_shards = pool.shards()
    if not all_shards:
        raise ReshardError(f"{pool.root}: no shards to reshard (expected {pool.shards_dir}/*.tar)")
    # A tar without the downloader's stats file was cut off mid-write: never read it as whole.
    shards = [s for s in all_shards if s.stats]
    incomplete = [os.path.basename(s.tar) for s in all_shards if not s.stats]

    # Every subset uid must belong to the pool (its metadata, or the downloader's records).
    partitions = pool.partitions()
    hits = engine.map(find_subset_rows, [UidLookupTask(p.path, subset_path) for p in partitions],
                      desc=Meter("reshard: check subset uids", unit="partitions"))
    in_pool = np.zeros(len(unique), dtype=bool)
    for h in hits:
        in_pool[h] = True
    if not in_pool.all():
        missing = unique[~in_pool]
        example = f"{int(missing[0]['f0']):016x}{int(missing[0]['f1']):016x}"
        raise SubsetFileError(f"{subset_path}: {len(missing)} uids are not in the pool {pool.root} (first: {example})")

    out_dir = storage.path(output)
    redone = prepare_output(out_dir, overwrite)
    tmp_dir = out_dir / "_tmp"
    storage.remove_tree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    try:
        selected = engine.map(
            select_shard,
            [SelectTask(s, subset_path, str(tmp_dir / f"{s.shard_id:08d}.tar")) for s in shards],
            desc=SELECT_METER,
        )
        counts = [(str(tmp_dir / f"{s.shard_id:08d}.tar"), r["written"]) for s, r in zip(shards, selected)]
        packs = plan_packs(counts, out_dir, shard_size)
        written_per_shard = engine.map(pack_shard, packs, desc=WRITE_METER)
    finally:
        storage.remove_tree(tmp_dir)
    sizes = {storage.path(p.out_tar).name: n for p, n in zip(packs, written_per_shard)}
    write_json(out_dir / "sizes.json", sizes)

    found = np.zeros(len(unique), dtype=bool)
    for r in selected:
        found[r.pop("found_subset_rows")] = True
    corrupt = [r for r in selected if r["error"]]
    lost_uids: set[str] = set()
    for s, r in zip(shards, selected):
        if r["error"]:
            lost_uids |= successful_uids(s)
            r["samples_lost"] = None if r["expected_samples"] is None else max(0, r["expected_samples"] - r["samples_read"])
    missing_idx = np.flatnonzero(~found)
    lost_rows = 0
    not_downloaded_rows = 0
    for i in missing_idx:
        uid = f"{int(unique[i]['f0']):016x}{int(unique[i]['f1']):016x}"
        if uid in lost_uids:
            lost_rows += int(multiplicity[i])
        else:
            not_downloaded_rows += int(multiplicity[i])
    written = int(sum(written_per_shard))
    stats = {
        "subset_file": subset_path,
        # which subset these shards hold: `train` records it, `evaluate bundle` checks the submitted subset against it
        "subset_sha256": subset_sha256,
        "subset_rows": int(len(subset)),
        "subset_unique_uids": int(len(unique)),
        "written": written,
        "not_downloaded": not_downloaded_rows,
        "lost_to_corrupt_shards": lost_rows,
        "input_shards": len(shards),
        "output_shards": len(packs),
        "samples_read": int(sum(r["samples_read"] for r in selected)),
        "samples_without_uid": int(sum(r["samples_without_uid"] for r in selected)),
        "corrupt_shards": [
            {k: r[k] for k in ("shard", "error", "samples_read", "expected_samples", "samples_lost") if k in r}
            for r in corrupt
        ],
        "incomplete_shards_skipped": incomplete,
        "reconciled": written + not_downloaded_rows + lost_rows == len(subset),
    }
    write_json(out_dir / "reshard_stats.json", stats)
    (out_dir / UNFINISHED).unlink()
    return {**stats, "redid_unfinished": redone}
