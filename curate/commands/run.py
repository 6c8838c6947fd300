"""`curate run`: filter a pool into a DataComp subset file, stats, and shards."""

from __future__ import annotations

import json

from curate.commands.common import add_engine_arguments, engine_from_args
from curate.commands.reshard import print_summary as print_reshard_summary

NAME = "run"
ORDER = 30
HELP = "filter a pool into a DataComp subset file (and shards)"
DESCRIPTION = ("Apply one or more filters (their intersection) to the pool's metadata; write OUT/subset.npy, "
               "OUT/stats.json and, when the pool has shards, OUT/shards/.")


def add_arguments(p) -> None:
    p.add_argument("--pool", required=True, help="pool folder (or a folder of DataComp metadata parquet files)")
    p.add_argument("--filter", action="append", required=True, dest="filters", metavar="NAME",
                   help="filter name; repeat for an intersection (see `curate filters`)")
    p.add_argument("--fraction", type=float, default=None, help="clip_score: keep the top fraction of the whole pool")
    p.add_argument("--threshold", type=float, default=None, help="clip_score: keep scores >= this")
    p.add_argument("--arch", choices=["b32", "l14"], default="l14", help="clip_score: which CLIP score column")
    p.add_argument("--fasttext-model", default=None, metavar="LID176_BIN", help="fastText lid.176.bin for language ID (default: py3langid, offline)")
    p.add_argument("--output", required=True)
    p.add_argument("--shard-size", type=int, default=10000, help="samples per output shard")
    p.add_argument("--no-reshard", action="store_true", help="write only the subset file, even when the pool has shards")
    add_engine_arguments(p)


def main(args) -> int:
    from curate.pool import Pool
    from curate.reshard import reshard
    from curate.run import run_filters
    from filters.registry import build_filter

    filters = [build_filter(n, arch=args.arch, fraction=args.fraction, threshold=args.threshold) for n in args.filters]
    pool = Pool(args.pool)
    with engine_from_args(args) as engine:
        stats = run_filters(pool, filters, args.output, engine, fasttext_model=args.fasttext_model)
        print_summary(stats)
        if pool.has_shards() and not args.no_reshard:
            rs = reshard(pool, stats["subset_file"], f"{args.output}/shards", engine, shard_size=args.shard_size, overwrite=True)
            print_reshard_summary(rs)
    return 0


def print_summary(s: dict) -> None:
    print(f"run: {s['rows_in']} rows in {s['partitions']} partitions -> kept {s['kept']} ({s['seconds']} s on {s['engine']})")
    for t in s["thresholds"]:
        print(f"  threshold {t['column']} top {t['fraction']:.0%}: {t['threshold']:.6g} (rank {t['rank']} of {t['pool_rows']})")
    for step in s["steps"]:
        print(f"  {step['filter']:12s} in {step['rows_in']:>9d}  kept {step['kept']:>9d}  rejected {step['rejected']:>9d}  {json.dumps(step['rejected_by_first_rule'])}")
    print(f"  subset: {s['subset_file']} (sha256 {s['subset_sha256'][:16]}...)")
