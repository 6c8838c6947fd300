"""One shard's download, as it runs in an engine's worker: img2dataset's Downloader behind our guards.

The task carries only paths and options; img2dataset is imported and its Downloader built in the worker,
so the driver never imports img2dataset. That matters for memory: img2dataset's writer imports webdataset,
which imports torch for its DataLoader classes, which downloading never uses; torch's import holds about
470 MB of private memory in every process. In a worker process that has not loaded torch, img2dataset is
imported with torch hidden (webdataset has stand-ins for when torch is absent), which takes a download
worker from ~620 MB to ~190 MB. The driver process, where other code may need webdataset's real classes
later, is never changed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate import storage
from curate.download import guard


def _import_downloader():
    """img2dataset's Downloader and writer; without torch when this is a worker that has not loaded it.

    Only in a single-threaded child process (a local engine worker): while torch is hidden, another thread
    importing torch (a Dask worker runs tasks in threads) would fail."""
    hide = (multiprocessing.parent_process() is not None and threading.active_count() == 1
            and "torch" not in sys.modules and "img2dataset" not in sys.modules)
    if hide:
        sys.modules["torch"] = None  # makes `import torch` raise ModuleNotFoundError, which webdataset handles
    try:
        from img2dataset.blurrer import BoundingBoxBlurrer
        from img2dataset.downloader import Downloader
        from img2dataset.writer import WebDatasetSampleWriter
    finally:
        if hide:
            del sys.modules["torch"]
    return Downloader, WebDatasetSampleWriter, BoundingBoxBlurrer


def read_rows(path: str, start: int, count: int) -> pa.Table:
    """Rows [start, start + count) of a parquet file, reading only the row groups that hold them
    (plans are written with one row group per shard, so a shard reads its own group)."""
    f = pq.ParquetFile(storage.arrow_source(path))
    groups, offset, first = [], 0, None
    for g in range(f.metadata.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if offset + n > start and offset < start + count:
            first = offset if first is None else first
            groups.append(g)
        offset += n
    if not groups:
        return f.schema_arrow.empty_table()
    return f.read_row_groups(groups).slice(start - first, count)


@dataclass(frozen=True)
class FetchOptions:
    """What img2dataset's Downloader and Resizer need, as plain values that travel to any engine's worker."""

    threads: int
    image_size: int
    resize_mode: str
    resize_only_if_bigger: bool
    encode_format: str
    encode_quality: int
    timeout: int
    retries: int
    max_pixels: int
    max_aspect_ratio: float
    min_image_size: int
    limits: guard.FetchLimits


@dataclass(frozen=True)
class ShardDownload:
    """Rows [first_row, first_row + rows) of a plan file, downloaded as shard `shard_id`."""

    plan_file: str
    first_row: int
    rows: int
    shard_id: int
    shard_size: int
    shards_dir: str
    has_faces: bool
    options: FetchOptions

    @property
    def column_list(self) -> list[str]:
        """The columns img2dataset's Reader would hand the Downloader: extra columns, caption, url."""
        return ["uid"] + (["face_bboxes"] if self.has_faces else []) + ["caption", "url"]

    def write_input(self, folder: str | None = None) -> str:
        """This shard's rows as the Arrow IPC file img2dataset's Downloader reads (and deletes when done), in
        SHARDS/_tmp, or in `folder` (a local one, for a pool in an object store)."""
        rows = read_rows(self.plan_file, self.first_row, self.rows)
        rows = rows.rename_columns(["caption" if c == "text" else c for c in rows.column_names]).select(self.column_list)
        tmp = Path(folder) if folder else Path(self.shards_dir) / "_tmp"
        tmp.mkdir(exist_ok=True)
        path = tmp / f"{self.shard_id}.feather"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
            writer.write_table(rows)
        return str(path)

    def __call__(self) -> tuple[bool, int, dict]:
        # OpenCV's own pixel bound, read once when it is imported: a second guard behind BoundedResizer's
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(self.options.max_pixels))
        Downloader, WebDatasetSampleWriter, BoundingBoxBlurrer = _import_downloader()
        from curate.download.resize import BoundedResizer

        o = self.options
        guard.install(o.limits)
        resizer = BoundedResizer(
            image_size=o.image_size,
            resize_mode=o.resize_mode,
            resize_only_if_bigger=o.resize_only_if_bigger,
            encode_format=o.encode_format,
            encode_quality=min(o.encode_quality, 9) if o.encode_format == "png" else o.encode_quality,
            min_image_size=o.min_image_size,
            max_pixels=o.max_pixels,
            max_aspect_ratio=o.max_aspect_ratio,
            blurrer=BoundingBoxBlurrer() if self.has_faces else None,
        )
        downloader = Downloader(
            sample_writer_class=WebDatasetSampleWriter,
            resizer=resizer,
            thread_count=o.threads,
            save_caption=True,
            extract_exif=False,
            output_folder=self.shards_dir,
            column_list=self.column_list,
            timeout=o.timeout,
            number_sample_per_shard=self.shard_size,
            oom_shard_count=8,
            compute_hash="sha256",
            verify_hash_type=None,
            encode_format=o.encode_format,
            retries=o.retries,
            user_agent_token=None,
            disallowed_header_directives=["noai", "noimageai", "noindex", "noimageindex"],
            blurring_bbox_col="face_bboxes" if self.has_faces else None,
        )
        if not storage.is_url(self.shards_dir):
            ok, _ = downloader((self.shard_id, self.write_input()))
        else:  # img2dataset writes the shard's files through fsspec; its input stays on this machine
            with tempfile.TemporaryDirectory(prefix="curate-download-") as local:
                ok, _ = downloader((self.shard_id, self.write_input(local)))
        return bool(ok), self.shard_id, self.counts() if ok else {}

    def counts(self) -> dict:
        """What the shard's stats file says, for the driver's progress: rows tried and images fetched."""
        try:
            stats = json.loads((storage.path(self.shards_dir) / f"{self.shard_id:08d}_stats.json").read_text())
            return {"rows": int(stats.get("count", 0)), "images": int(stats.get("successes", 0))}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}  # progress only: the counts that matter are read from the shards afterwards


def run_shard_download(task: ShardDownload) -> tuple[bool, int, dict]:
    """(whether the shard finished, its id, its rows and images for progress)."""
    return task()
