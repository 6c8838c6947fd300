"""`curate download`: a URL list into POOL/shards with img2dataset."""

from __future__ import annotations

import json

from curate.commands.common import add_engine_arguments, engine_from_args
from curate.download.guard import DEFAULT_MAX_BYTES
from curate.download.reasons import TRANSIENT

NAME = "download"
ORDER = 10
HELP = "download a URL list into POOL/shards with img2dataset"
DESCRIPTION = ("Download a DataComp-schema URL list (uid, url, text[, face_bboxes]) as webdataset shards. "
               "Only http(s) URLs on public addresses are fetched (checked on every redirect), each response "
               "bounded in bytes, time and decoded pixels. Re-running resumes where it stopped; a list that "
               "gained rows fetches just the new rows into new shards; --retry-failed fetches failed rows again.")


def add_arguments(p) -> None:
    p.add_argument("--url-list", default=None,
                   help=".parquet, .csv or .jsonl file (or a folder of them; local or s3://...); default: the pool's own metadata "
                        "(POOL/metadata/*.parquet, e.g. from `curate fetch-metadata`), which is then kept as it is")
    p.add_argument("--pool", required=True, help="pool folder (or s3://bucket/prefix) to create or resume")
    p.add_argument("--threads", type=int, default=64, help="download threads per process")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--resize-mode", default="keep_ratio_largest", choices=["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"])
    p.add_argument("--shard-size", type=int, default=10000, help="samples per shard")
    p.add_argument("--timeout", type=int, default=10, help="seconds a connection may wait for one read (img2dataset's timeout)")
    p.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="seconds for a whole request, redirects and body included (default: 3 x --timeout); counted as `deadline`")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"largest response body accepted (default {DEFAULT_MAX_BYTES:,}); larger ones are counted as `too_large`")
    p.add_argument("--allow-private", action="store_true",
                   help="also fetch loopback, private and link-local addresses (a test server on this machine); "
                        "refused by default, on every redirect hop, as `private_address`")
    p.add_argument("--allow-network", action="append", default=[], metavar="CIDR", type=_network,
                   help="allow one non-public network only (e.g. 10.1.0.0/16 for an internal mirror); repeatable")
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--max-pixels", type=int, default=89_478_485,
                   help="refuse images whose header declares more pixels than this, before decoding")
    p.add_argument("--retry-failed", nargs="?", const="", default=None, metavar="REASONS",
                   help="fetch again the rows that failed to download, into new shards: with no value the transient "
                        f"failures ({','.join(TRANSIENT)}), `all`, or a comma list of reasons from download_stats.json "
                        "(`5xx` means http_5xx)")
    add_engine_arguments(p)


def _network(text: str) -> str:
    import argparse
    import ipaddress

    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a network: {text!r} ({e})") from e


def main(args) -> int:
    from curate.download import DownloadOptions, download, retry_reasons

    opts = DownloadOptions(processes=args.processes, threads=args.threads, image_size=args.image_size,
                           resize_mode=args.resize_mode, shard_size=args.shard_size, timeout=args.timeout,
                           deadline=args.deadline, max_bytes=args.max_bytes, allow_private=args.allow_private,
                           allow_networks=tuple(args.allow_network),
                           retries=args.retries, max_pixels=args.max_pixels,
                           retry_failed=None if args.retry_failed is None else retry_reasons(args.retry_failed))
    with engine_from_args(args) as engine:
        summary = download(args.url_list, args.pool, engine, opts)
    print_summary(summary)
    return 0 if summary["reconciled"] and not summary["failed_shards"] else 1


def print_summary(s: dict) -> None:
    print(f"download: {s['input_rows']} rows -> {s['success']} images in {s['shards']} shards")
    print(f"  refused (not fetched): {s['refused_total']} {json.dumps(s['refused'])}")
    print(f"  failed to download: {s['failed_to_download']}, failed to resize: {s['failed_to_resize']}, not attempted: {s['not_attempted']}")
    if s["failure_reasons"]:
        print(f"  failure reasons: {json.dumps(s['failure_reasons'])}")
    if s.get("retried"):
        print(f"  rows fetched again by --retry-failed (over all retries): {s['retried']}")
    if s["failed_shards"]:
        print(f"  shards that failed as a whole (rerun to try them again): {s['failed_shards']}")
    for problem in s.get("inconsistent_shards", []):
        print(f"  inconsistent shard: {problem}")
    print(f"  counts reconcile: {s['reconciled']}")
