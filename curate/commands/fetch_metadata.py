"""`curate fetch-metadata`: DataComp's metadata from the hub (or a local mirror) into POOL/metadata."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "fetch-metadata"
ORDER = 5
HELP = "fetch DataComp's metadata (parquet, --npz embeddings) from the hub into POOL/metadata"
DESCRIPTION = ("Fetch the metadata of a DataComp scale, as DataComp's download_upstream.py does: the parquet files "
               "of the hub dataset repo mlfoundations/datacomp_{small,medium,large,xlarge} or "
               "mlfoundations/datacomp_1b (with --npz also the .npz embeddings) into POOL/metadata. Each file is "
               "checked against the size and sha256 the hub states before it gets its name; a rerun skips verified "
               "files and resumes a half-fetched one. Then `curate download --pool POOL` fetches the images.")


def add_arguments(p) -> None:
    from curate.fetch_metadata import SCALES

    p.add_argument("--scale", required=True, choices=SCALES, help="DataComp scale (datacomp_1b: the 1B subset)")
    p.add_argument("--pool", required=True, help="pool folder (or s3://bucket/prefix); files go to POOL/metadata")
    p.add_argument("--npz", action="store_true",
                   help="also fetch the .npz files (CLIP B/32 and L/14 embeddings, beside each parquet)")
    p.add_argument("--hub-root", type=Path, default=None, metavar="DIR",
                   help="read the repo from a local mirror DIR/mlfoundations/datacomp_<scale>/ (with its "
                        ".hub_tree.json) instead of the hub")
    p.add_argument("--revision", default=None, help="branch, tag or commit of the repo (default: main)")
    p.add_argument("--workers", type=int, default=8, help="files fetched at once (default 8)")


def main(args) -> int:
    from curate.fetch_metadata import fetch_metadata

    s = fetch_metadata(args.scale, args.pool, npz=args.npz, hub_root=args.hub_root, revision=args.revision,
                       workers=args.workers)
    print(f"fetch-metadata: {s['repo']}@{s['commit']} ({s['source']}): {s['files']} files, {s['fetched']} fetched "
          f"({s['bytes_fetched']:,} bytes), {s['present']} already present and verified, {len(s['failed'])} failed")
    for problem in s["failed"].values():
        print(f"curate fetch-metadata: error: {problem}", file=sys.stderr)
    return 1 if s["failed"] else 0
