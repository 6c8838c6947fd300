"""`curate download`: a DataComp-schema URL list into `POOL/shards/` as webdataset, with img2dataset.

We build img2dataset's own Reader (which cuts the list into shards and skips shards already done, so a
re-run resumes) and Downloader (fetch, resize, blur faces, write tar + parquet + stats), and map the
Downloader over the shards with our engine instead of img2dataset's distributor, so `--engine dask`
works as well as local and Spark. Before img2dataset sees the list we refuse every URL that is not
http(s), and every redirect to another scheme, and bound the pixels OpenCV will decode.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations, which phones home

from curate.atomic import atomic_path, write_json
from curate.engines import Engine
from curate.uids import valid_uid_mask

REQUIRED_COLUMNS = ("uid", "url", "text")
ALLOWED_SCHEMES = ("http", "https")
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's decompression-bomb limit
METADATA_ROWS_PER_FILE = 1_000_000


class UrlListError(ValueError):
    """A URL list that cannot be read or lacks DataComp's columns."""


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
    timeout: int = 10
    retries: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect_ratio: float = float("inf")
    min_image_size: int = 0


def read_url_list(path: str | os.PathLike) -> pa.Table:
    """Read a parquet, csv or jsonl URL list; check DataComp's required columns are there."""
    path = str(path)
    p = Path(path)
    if not p.exists():
        raise UrlListError(f"{path}: URL list not found")
    files = sorted(x for x in p.iterdir() if x.suffix in (".parquet", ".csv", ".jsonl")) if p.is_dir() else [p]
    if not files:
        raise UrlListError(f"{path}: no .parquet, .csv or .jsonl files in this folder")
    tables = [_read_one(str(f)) for f in files]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as e:
        raise UrlListError(f"{path}: URL list files disagree on their columns ({e})") from e
    return table


def _read_one(path: str) -> pa.Table:
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
        elif suffix == ".csv":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"uid": pa.string(), "text": pa.string(), "url": pa.string()}))
        elif suffix in (".jsonl", ".json"):
            table = pajson.read_json(path)
        else:
            raise UrlListError(f"{path}: unsupported URL list format {suffix!r} (use .parquet, .csv or .jsonl)")
    except UrlListError:
        raise
    except Exception as e:
        raise UrlListError(f"{path}: cannot read URL list ({e})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise UrlListError(f"{path}: missing column(s) {', '.join(missing)} (columns present: {', '.join(table.column_names)})")
    for col in ("uid", "url", "text"):
        if not pa.types.is_string(table.schema.field(col).type):
            table = table.set_column(table.column_names.index(col), col, pc.cast(table.column(col), pa.string()))
    return table


def refusal_reasons(table: pa.Table) -> list[str | None]:
    """Per row: None when the row may be fetched, else why not (`invalid_uid`, `duplicate_uid`, `scheme`, `missing_url`)."""
    uid_ok = valid_uid_mask(table.column("uid"))
    uids = table.column("uid").to_pylist()
    seen: set[str] = set()
    reasons: list[str | None] = []
    for i, url in enumerate(table.column("url").to_pylist()):
        if not uid_ok[i]:
            reasons.append("invalid_uid")
            continue
        key = uids[i].lower()
        if key in seen:
            reasons.append("duplicate_uid")
            continue
        seen.add(key)
        if not url:
            reasons.append("missing_url")
            continue
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme.lower() not in ALLOWED_SCHEMES or not parsed.netloc:
            reasons.append("scheme")
            continue
        reasons.append(None)
    return reasons


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s); urllib would otherwise follow one to ftp://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ALLOWED_SCHEMES:
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-http(s) URL refused: {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass
class ShardDownload:
    """One img2dataset shard, run by whatever engine; installs the http-only opener in the worker first."""

    downloader: object
    shard: tuple
    max_pixels: int

    def __call__(self) -> tuple[bool, int]:
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(self.max_pixels))
        urllib.request.install_opener(urllib.request.build_opener(_HttpOnlyRedirects()))
        ok, _ = self.downloader(self.shard)
        return bool(ok), int(self.shard[0])


def run_shard_download(task: ShardDownload) -> tuple[bool, int]:
    return task()


def _write_metadata(pool_root: Path, table: pa.Table) -> None:
    """Keep the whole URL list (scores and all) as the pool's metadata, in DataComp's layout."""
    meta_dir = pool_root / "metadata"
    meta_dir.mkdir(parents=True, exist_ok=True)
    for old in meta_dir.glob("*.parquet"):
        old.unlink()
    for i, start in enumerate(range(0, max(table.num_rows, 1), METADATA_ROWS_PER_FILE)):
        with atomic_path(meta_dir / f"{i:08d}.parquet") as tmp:
            pq.write_table(table.slice(start, METADATA_ROWS_PER_FILE), tmp)


def _write_input(path: Path, table: pa.Table) -> None:
    """The rows img2dataset will fetch; rewritten only when they change, so shard ids stay stable for resume."""
    if path.exists():
        try:
            if pq.read_table(path).equals(table):
                return
        except Exception:
            pass
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def download(url_list: str, pool_root: str | os.PathLike, engine: Engine, options: DownloadOptions | None = None) -> dict:
    """Download the list into POOL/shards; return the summary (also written to POOL/download_stats.json)."""
    from img2dataset.blurrer import BoundingBoxBlurrer
    from img2dataset.downloader import Downloader
    from img2dataset.reader import Reader
    from img2dataset.resizer import Resizer
    from img2dataset.writer import WebDatasetSampleWriter

    opts = options or DownloadOptions()
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(opts.max_pixels))
    pool_root = Path(pool_root)
    table = read_url_list(url_list)
    reasons = refusal_reasons(table)
    refused = Counter(r for r in reasons if r)
    accepted_mask = pa.array([r is None for r in reasons])
    pool_root.mkdir(parents=True, exist_ok=True)
    _write_metadata(pool_root, table)

    has_faces = "face_bboxes" in table.column_names
    keep_cols = ["uid", "url", "text"] + (["face_bboxes"] if has_faces else [])
    accepted = table.filter(accepted_mask).select(keep_cols)
    work = pool_root / "_download"
    work.mkdir(exist_ok=True)
    input_path = work / "input.parquet"
    _write_input(input_path, accepted)

    shards_dir = pool_root / "shards"
    shards_dir.mkdir(exist_ok=True)
    done = {int(p.name.split("_")[0]) for p in shards_dir.glob("*_stats.json")}
    tmp_dir = shards_dir / "_tmp"
    tmp_dir.mkdir(exist_ok=True)
    extra = ["uid"] + (["face_bboxes"] if has_faces else [])
    jobs: list[ShardDownload] = []
    if accepted.num_rows:
        reader = Reader(
            str(input_path), "parquet", "url", "text", None, None, list(extra), opts.shard_size, done, str(tmp_dir), 0
        )
        resizer = Resizer(
            image_size=opts.image_size,
            resize_mode=opts.resize_mode,
            resize_only_if_bigger=opts.resize_only_if_bigger,
            encode_format=opts.encode_format,
            encode_quality=min(opts.encode_quality, 9) if opts.encode_format == "png" else opts.encode_quality,
            min_image_size=opts.min_image_size,
            max_image_area=opts.max_pixels,
            max_aspect_ratio=opts.max_aspect_ratio,
            blurrer=BoundingBoxBlurrer() if has_faces else None,
        )
        downloader = Downloader(
            sample_writer_class=WebDatasetSampleWriter,
            resizer=resizer,
            thread_count=opts.threads,
            save_caption=True,
            extract_exif=False,
            output_folder=str(shards_dir),
            column_list=reader.column_list,
            timeout=opts.timeout,
            number_sample_per_shard=opts.shard_size,
            oom_shard_count=8,
            compute_hash="sha256",
            verify_hash_type=None,
            encode_format=opts.encode_format,
            retries=opts.retries,
            user_agent_token=None,
            disallowed_header_directives=["noai", "noimageai", "noindex", "noimageindex"],
            blurring_bbox_col="face_bboxes" if has_faces else None,
        )
        jobs = [ShardDownload(downloader, shard, opts.max_pixels) for shard in reader]
    results = engine.map(run_shard_download, jobs, desc="download shards") if jobs else []
    failed_shards = sorted(sid for ok, sid in results if not ok)
    for p in tmp_dir.glob("*"):
        p.unlink()
    tmp_dir.rmdir()

    summary = summarize(shards_dir, table.num_rows, refused, accepted.num_rows, failed_shards)
    write_json(pool_root / "download_stats.json", summary)
    return summary


def summarize(shards_dir: Path, rows: int, refused: Counter, accepted: int, failed_shards: list[int]) -> dict:
    """Add up img2dataset's per-shard stats; every input row lands in exactly one bucket."""
    success = failed_download = failed_resize = 0
    reasons: Counter = Counter()
    shards = 0
    for stats_file in sorted(shards_dir.glob("*_stats.json")):
        with open(stats_file) as f:
            s = json.load(f)
        shards += 1
        success += int(s.get("successes", 0))
        failed_download += int(s.get("failed_to_download", 0))
        failed_resize += int(s.get("failed_to_resize", 0))
        for msg, count in (s.get("status_dict") or {}).items():
            if msg != "success":
                reasons[_short_reason(msg)] += int(count)
    attempted = success + failed_download + failed_resize
    not_attempted = accepted - attempted
    summary = {
        "input_rows": rows,
        "refused": dict(sorted(refused.items())),
        "refused_total": int(sum(refused.values())),
        "success": success,
        "failed_to_download": failed_download,
        "failed_to_resize": failed_resize,
        "not_attempted": not_attempted,
        "failure_reasons": dict(reasons.most_common()),
        "shards": shards,
        "failed_shards": failed_shards,
    }
    summary["reconciled"] = rows == summary["refused_total"] + success + failed_download + failed_resize + not_attempted
    return summary


def _short_reason(message: str) -> str:
    """Group img2dataset's error messages (which embed URLs) into a few reasons."""
    m = message.lower()
    for needle, reason in (
        ("redirect to a non-http", "redirect_refused"),
        ("redirection to url", "redirect_refused"),
        ("http error 404", "http_404"),
        ("http error 403", "http_403"),
        ("http error 5", "http_5xx"),
        ("http error", "http_error"),
        ("timed out", "timeout"),
        ("connection refused", "connection_refused"),
        ("image decoding error", "decode_error"),
        ("image area", "too_many_pixels"),
        ("aspect ratio", "aspect_ratio"),
        ("too small", "too_small"),
        ("x-robots-tag", "disallowed_by_robots_tag"),
        ("name or service not known", "dns"),
        ("urlopen error", "url_error"),
    ):
        if needle in m:
            return reason
    return message.strip().splitlines()[0][:80] if message.strip() else "unknown"


def counts_by_status(shards_dir: Path) -> dict[str, int]:
    """Status counts over the shard parquet files (what img2dataset recorded per sample)."""
    out: Counter = Counter()
    for p in sorted(shards_dir.glob("*.parquet")):
        col = pq.read_table(p, columns=["status"]).column("status").to_pylist()
        out.update(col)
    return dict(out)


