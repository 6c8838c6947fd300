"""`curate reshard`: a subset's samples as new webdataset shards."""

from __future__ import annotations

from curate.commands.common import add_engine_arguments, engine_from_args

NAME = "reshard"
ORDER = 40
HELP = "write a subset's samples as new webdataset shards"
DESCRIPTION = "Like DataComp's resharder: a uid listed k times is written k times as {uid}-{j}."


def add_arguments(p) -> None:
    p.add_argument("--pool", required=True)
    p.add_argument("--subset", required=True, help="DataComp subset file (.npy of dtype u8,u8, sorted)")
    p.add_argument("--output", required=True)
    p.add_argument("--shard-size", type=int, default=10000)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the shards of a finished reshard in OUTPUT (an unfinished one is always redone)")
    add_engine_arguments(p)


def main(args) -> int:
    from curate.pool import Pool
    from curate.reshard import reshard

    with engine_from_args(args) as engine:
        stats = reshard(Pool(args.pool), args.subset, args.output, engine, shard_size=args.shard_size, overwrite=args.overwrite)
    print_summary(stats)
    return 0 if stats["reconciled"] else 1


def print_summary(s: dict) -> None:
    if s.get("redid_unfinished"):
        print("reshard: the output held an unfinished reshard (killed); it was written again from the start")
    print(f"reshard: {s['subset_rows']} subset rows -> wrote {s['written']} samples in {s['output_shards']} shards; "
          f"not downloaded {s['not_downloaded']}, lost to corrupt shards {s['lost_to_corrupt_shards']}; reconcile: {s['reconciled']}")
    for c in s["corrupt_shards"]:
        print(f"  corrupt shard {c['shard']}: {c['error']} (read {c['samples_read']}, lost {c.get('samples_lost')})")
