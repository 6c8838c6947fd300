"""`curate download`: a DataComp-schema URL list into `POOL/shards/` as webdataset, with img2dataset.

We run img2dataset's own Downloader (fetch, resize, blur faces, write tar + parquet + stats) on each shard,
mapped by our engine instead of img2dataset's distributor, so `--engine dask` and Spark work as well as
local. Rows are cut into shards as img2dataset's Reader cuts them, from our plans. Around them, for a web
of strangers:

* `urllist`: rows that must not be fetched (not http(s), invalid or repeated uid, bytes that are not
  UTF-8) are refused and counted before img2dataset sees the list;
* `worker`: one shard's task, which builds img2dataset's Downloader in the worker (see there for why);
* `guard`: in each download process, urllib fetches only public addresses, on every redirect hop, with a
  byte bound and a whole-request deadline;
* `resize`: pixels are bounded on the image header before OpenCV allocates them;
* `plans`: which rows go to which shards is kept on disk, so a rerun resumes, fetches rows a longer list
  gained into new shards, or re-fetches failed rows (`retry_failed`);
* `outcomes`: the counts, each from its own source, reconcile or say they do not.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations, which phones home

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import atomic_path, remove_stale_temporaries, write_json
from curate.download import guard, plans, reasons
from curate.download.outcomes import FAILED_TO_DOWNLOAD, finished_shards, read_outcomes, summarize
from curate.download.plans import PlanError
from curate.download.worker import FetchOptions, ShardDownload, run_shard_download
from curate.download.urllist import (
    DUPLICATE_UID, INVALID_UID, UrlListError, invalid_utf8_rows, read_url_list, refusal_reasons, repaired,
)
from curate.engines import Engine
from curate.paths import refuse_overlap
from curate.progress import Meter, rate

__all__ = ["DownloadOptions", "PlanError", "UrlListError", "download", "read_url_list", "refusal_reasons"]

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's decompression-bomb limit
METADATA_ROWS_PER_FILE = 1_000_000


@dataclass
class DownloadOptions:
    processes: int | None = None
    threads: int = 64
    image_size: int = 512
    resize_mode: str = "keep_ratio_largest"
    resize_only_if_bigger: bool = True
    encode_format: str = "jpg"
    encode_quality: int = 95  # jpg/webp quality; png takes a compression level 0-9
    shard_size: int = 10000
    timeout: int = 10  # seconds for one socket operation (img2dataset's timeout)
    deadline: float | None = None  # seconds for a whole request, redirects and body included (None: 3 x timeout)
    max_bytes: int = guard.DEFAULT_MAX_BYTES
    allow_private: bool = False  # fetch loopback/private/link-local addresses (a local test server)
    allow_networks: tuple[str, ...] = ()  # or only these non-public networks (CIDR)
    retries: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = float("inf")
    min_image_size: int = 0
    retry_failed: tuple[str, ...] | None = None  # re-fetch rows that failed to download for these reasons

    def limits(self) -> guard.FetchLimits:
        deadline = self.deadline if self.deadline is not None else 3.0 * self.timeout
        return guard.FetchLimits(max_bytes=self.max_bytes, deadline=deadline, allow_private=self.allow_private,
                                 allow_networks=tuple(self.allow_networks))


def retry_reasons(spec: str) -> tuple[str, ...]:
    """`--retry-failed` values: empty for the transient failures, `all`, or reason names (`5xx` = `http_5xx`)."""
    if not spec:
        return reasons.TRANSIENT
    if spec == "all":
        return ("all",)
    out = []
    for name in (x.strip() for x in spec.split(",") if x.strip()):
        name = f"http_{name}" if name[:1].isdigit() else name
        if name not in reasons.NAMES:
            raise ValueError(f"--retry-failed: unknown reason {name!r} (known: all, {', '.join(reasons.NAMES)})")
        out.append(name)
    return tuple(out)


def metadata_table(table: pa.Table, refused: list[str | None]) -> pa.Table:
    """The pool's metadata: one row per distinct valid uid (as fetched), text and URL stored as valid UTF-8."""
    keep = pa.array([r not in (INVALID_UID, DUPLICATE_UID) for r in refused])
    out = table.filter(keep)
    for col in ("url", "text"):
        i = out.column_names.index(col)
        out = out.set_column(i, col, repaired(out.column(col), invalid_utf8_rows(out.column(col))))
    return out


def _write_metadata(pool_root: Path, table: pa.Table) -> None:
    """Keep the URL list (scores and all) as the pool's metadata, in DataComp's layout."""
    meta_dir = pool_root / "metadata"
    meta_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), METADATA_ROWS_PER_FILE)):
        names.append(f"{i:08d}.parquet")
        with atomic_path(meta_dir / names[-1]) as tmp:
            pq.write_table(table.slice(start, METADATA_ROWS_PER_FILE), tmp)
    for old in list(meta_dir.glob("*.parquet")):
        if old.name not in names:
            old.unlink()


def _run_plans(todo: plans.Plans, opts: DownloadOptions, engine: Engine, shards_dir: Path, has_faces: bool) -> list[int]:
    """Download every unfinished shard of every plan; returns the shards that failed as a whole."""
    done = set(finished_shards(shards_dir))
    fetch = FetchOptions(
        threads=opts.threads, image_size=opts.image_size, resize_mode=opts.resize_mode,
        resize_only_if_bigger=opts.resize_only_if_bigger, encode_format=opts.encode_format,
        encode_quality=opts.encode_quality, timeout=opts.timeout, retries=opts.retries, max_pixels=opts.max_pixels,
        max_aspect_ratio=opts.max_aspect_ratio, min_image_size=opts.min_image_size, limits=opts.limits())
    jobs = []
    for plan in todo.plans:
        for sid in plan.shard_ids:
            if sid not in done:
                first, rows = plan.shard_rows(sid, todo.shard_size)
                jobs.append(ShardDownload(str(todo.path(plan)), first, rows, sid, todo.shard_size, str(shards_dir),
                                          has_faces, fetch))
    results = engine.map(run_shard_download, jobs, desc=SHARDS_METER) if jobs else []
    tmp_dir = shards_dir / "_tmp"  # only a local pool's workers put their inputs here
    if not storage.is_url(tmp_dir) and tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    return sorted(sid for ok, sid, _ in results if not ok)


def _shard_counts(result: tuple[bool, int, dict]) -> dict:
    return result[2]


def _show_counts(c: dict, seconds: float) -> str:
    """As img2dataset shows it: images so far, the share of tried rows that succeeded, images per second."""
    images, rows = c.get("images", 0), c.get("rows", 0)
    success = f", {images / rows:.1%} success" if rows else ""
    return f"{images:,} images{success}, {rate(images, seconds, 'images')}"


#: the download's bar: shards done, images fetched and the running success rate, from each shard's result
SHARDS_METER = Meter("download", unit="shards", count=_shard_counts, show=_show_counts)


def _unfinished_retry(todo: plans.Plans, shards_dir: Path, wanted: tuple[str, ...]) -> bool:
    """Whether the pool's last plan is a retry of the same failures that a kill left unfinished."""
    last = todo.plans[-1] if todo.plans else None
    return (last is not None and last.kind == plans.RETRY and last.reasons == list(wanted)
            and not set(last.shard_ids) <= set(finished_shards(shards_dir)))


def _plan_retry(todo: plans.Plans, accepted: pa.Table, shards_dir: Path, wanted: tuple[str, ...]) -> plans.Plan | None:
    """A plan of the rows whose latest outcome is a download failure for one of the `wanted` reasons."""
    outcomes = read_outcomes(shards_dir, finished_shards(shards_dir)).table
    failed = outcomes.filter(pc.equal(outcomes.column("status"), FAILED_TO_DOWNLOAD))
    why = [reasons.short_reason(m) for m in failed.column("error_message").to_pylist()]
    pick = pa.array(["all" in wanted and r not in reasons.REFUSED_AT_FETCH or r in wanted for r in why], pa.bool_())
    uids = failed.column("uid").filter(pick)
    rows = accepted.filter(pc.is_in(accepted.column("uid"), value_set=uids))
    if rows.num_rows == 0:
        return None
    return todo.add(rows, plans.RETRY, list(wanted))


def download(url_list: str | None, pool_root: str | os.PathLike, engine: Engine,
             options: DownloadOptions | None = None) -> dict:
    """Download the list into POOL/shards; return the summary (also written to POOL/download_stats.json).

    Without a list (or given POOL/metadata itself) the pool's own metadata is the list, e.g. DataComp's from
    `curate fetch-metadata`: it is read, never rewritten, so its files, extra columns and the .npz files
    beside them stay as they are.
    """
    opts = options or DownloadOptions()
    pool_root = storage.path(pool_root)  # a Path, or a UPath for a pool in an object store
    own_metadata = url_list is None or storage.same_place(url_list, pool_root / "metadata")
    if url_list is None:
        url_list = str(pool_root / "metadata")
        if not storage.path(url_list).is_dir():
            raise UrlListError(f"{url_list}: no metadata in this pool; give --url-list, or fetch DataComp's "
                               f"with `curate fetch-metadata --pool {pool_root}`")
    if not own_metadata:
        refuse_overlap({"--url-list": url_list}, pool_root, "--pool")
    # the pool's own metadata is not copied: only what downloading reads
    table = read_url_list(url_list, ("uid", "url", "text", "face_bboxes") if own_metadata else None)
    refused_rows = refusal_reasons(table)
    refused = Counter(r for r in refused_rows if r)
    accepted_mask = pa.array([r is None for r in refused_rows])
    has_faces = "face_bboxes" in table.column_names
    keep_cols = ["uid", "url", "text"] + (["face_bboxes"] if has_faces else [])
    accepted = table.filter(accepted_mask).select(keep_cols)

    work = pool_root / "_download"
    shards_dir = pool_root / "shards"
    for folder in (work, shards_dir):
        folder.mkdir(parents=True, exist_ok=True)
    # what a killed run left half-written; a finished run leaves none
    remove_stale_temporaries(pool_root, work, work / "plans", shards_dir, pool_root / "metadata")
    todo = plans.load(work, opts.shard_size)
    if todo.shard_size != opts.shard_size:
        print(f"download: this pool's shards hold {todo.shard_size} samples (its first run's --shard-size); keeping it")
    plans.extend_with_list(todo, accepted, url_list)
    if not own_metadata:
        _write_metadata(pool_root, metadata_table(table, refused_rows))

    wanted = tuple(opts.retry_failed) if opts.retry_failed is not None else None
    # a killed retry of the same failures is finished by the run below: finishing it is this retry
    resuming_retry = wanted is not None and _unfinished_retry(todo, shards_dir, wanted)
    failed_shards = _run_plans(todo, opts, engine, shards_dir, has_faces)
    if wanted is not None and not resuming_retry and not failed_shards:
        if _plan_retry(todo, accepted, shards_dir, wanted) is not None:
            failed_shards = _run_plans(todo, opts, engine, shards_dir, has_faces)

    done = finished_shards(shards_dir)
    retried = sum(p.rows for p in todo.plans if p.kind == plans.RETRY)
    summary = summarize(table.num_rows, refused, accepted.column("uid"), read_outcomes(shards_dir, done), len(done),
                        failed_shards, retried)
    write_json(pool_root / "download_stats.json", summary)
    return summary
