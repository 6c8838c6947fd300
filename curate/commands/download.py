"""`curate download`: a URL list into POOL/shards with img2dataset."""

from __future__ import annotations

import json

from curate.commands.common import add_engine_arguments, engine_from_args

NAME = "download"
ORDER = 10
HELP = "download a URL list into POOL/shards with img2dataset"
DESCRIPTION = ("Download a DataComp-schema URL list (uid, url, text[, face_bboxes]) as webdataset shards. "
               "Only http(s) URLs are fetched; re-running resumes where it stopped.")


def add_arguments(p) -> None:
    p.add_argument("--url-list", required=True, help=".parquet, .csv or .jsonl file (or a folder of them)")
    p.add_argument("--pool", required=True, help="pool folder to create or resume")
    p.add_argument("--threads", type=int, default=64, help="download threads per process")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--resize-mode", default="keep_ratio_largest", choices=["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"])
    p.add_argument("--shard-size", type=int, default=10000, help="samples per shard")
    p.add_argument("--timeout", type=int, default=10, help="seconds per request")
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--max-pixels", type=int, default=89_478_485, help="refuse images with more pixels than this")
    add_engine_arguments(p)


def main(args) -> int:
    from curate.download import DownloadOptions, download

    opts = DownloadOptions(processes=args.processes, threads=args.threads, image_size=args.image_size,
                           resize_mode=args.resize_mode, shard_size=args.shard_size, timeout=args.timeout,
                           retries=args.retries, max_pixels=args.max_pixels)
    with engine_from_args(args) as engine:
        summary = download(args.url_list, args.pool, engine, opts)
    print_summary(summary)
    return 0 if summary["reconciled"] else 1


def print_summary(s: dict) -> None:
    print(f"download: {s['input_rows']} rows -> {s['success']} images in {s['shards']} shards")
    print(f"  refused (not fetched): {s['refused_total']} {json.dumps(s['refused'])}")
    print(f"  failed to download: {s['failed_to_download']}, failed to resize: {s['failed_to_resize']}, not attempted: {s['not_attempted']}")
    if s["failure_reasons"]:
        print(f"  failure reasons: {json.dumps(s['failure_reasons'])}")
    print(f"  counts reconcile: {s['reconciled']}")
