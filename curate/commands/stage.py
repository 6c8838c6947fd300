"""`curate stage`: per-sample signals in one pass over the shards."""

from __future__ import annotations

import json

from curate.commands.common import add_engine_arguments, engine_from_args

NAME = "stage"
ORDER = 20
HELP = "compute per-sample signals in one pass over the shards"
DESCRIPTION = ("Writes POOL/columns/<signal>/{shard}.parquet (uid, value, status) per shard; "
               "shards already done are skipped, so a killed stage resumes.")


def add_arguments(p) -> None:
    p.add_argument("--pool", required=True)
    p.add_argument("--signals", default="phash,sha256", help="comma-separated: phash, sha256")
    p.add_argument("--max-pixels", type=int, default=89_478_485, help="images with more pixels get status too_many_pixels")
    add_engine_arguments(p)


def main(args) -> int:
    from curate.pool import Pool
    from curate.signals.decode import DecodeLimits
    from curate.stage import run_stage

    with engine_from_args(args) as engine:
        stats = run_stage(Pool(args.pool), [s.strip() for s in args.signals.split(",") if s.strip()], engine,
                          DecodeLimits(max_pixels=args.max_pixels))
    print(f"stage: {stats['samples']} samples in {stats['shards_computed']} shards "
          f"({stats['shards_skipped']} already done), {stats['images_per_second']} images/s")
    for sig, c in stats["per_signal"].items():
        print(f"  {sig:8s} ok {c['ok']}  failed {json.dumps(c['failed'])}")
    return 0
