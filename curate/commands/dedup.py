"""`curate dedup`: group near-duplicate (pHash), exact (sha256) or semantic (CLIP) duplicates."""

from __future__ import annotations

import json
import sys

from curate import progress
from curate.commands.common import add_engine_arguments, engine_from_args

NAME = "dedup"
ORDER = 25
HELP = "group duplicates (pHash within D bits, sha256, or semantic) and mark one to keep per group"
DESCRIPTION = ("Writes POOL/columns/dedup_<method>/<file>.parquet (uid, dedup_<method>_group, dedup_<method>_keep) "
               "for the `dedup` filter, and POOL/columns/dedup_<method>_stats.json. pHash finds every pair within "
               "--max-distance bits exactly (multi-index hashing), never by sampling.")


def add_arguments(p) -> None:
    p.add_argument("--pool", required=True)
    p.add_argument("--method", choices=["phash", "sha256", "semantic"], default="phash")
    p.add_argument("--max-distance", type=int, default=4, metavar="D", help="phash: Hamming distance in bits (default 4)")
    p.add_argument("--keep", choices=["first", "highest_clip_score"], default="first",
                   help="which member of a group to keep: the first in pool order, or the highest CLIP score")
    p.add_argument("--score-column", default=None, help="for highest_clip_score (default: clip_l14_similarity_score, else clip_b32_similarity_score)")
    p.add_argument("--eps", type=float, default=0.05, help="semantic: pairs with cosine > 1 - eps")
    p.add_argument("--clusters", type=int, default=None, help="semantic: k-means clusters (default: rows / 1000)")
    p.add_argument("--arch", default="l14", metavar="TAG",
                   help="semantic: which CLIP image embeddings: l14, b32, or the --clip-tag of a stage run (default l14)")
    add_engine_arguments(p)


def main(args) -> int:
    from curate.atomic import remove_stale_temporaries
    from curate.dedup.run import run_dedup
    from curate.pool import Pool

    Pool(args.pool)  # a missing pool is named as such, not as a missing stage
    remove_stale_temporaries(args.pool, f"{args.pool}/columns")  # left by a killed run (stats, report)

    progress.configure(not args.no_progress)
    with progress.working(f"dedup {args.method}"):  # the search reports no counts as it goes: the time so far
        if args.engine == "local":
            engine = None  # the local search runs in this process (vectorised numpy); no worker pool needed
            stats = run_dedup(args.pool, args.method, engine=engine, max_distance=args.max_distance, keep=args.keep,
                              score_column=args.score_column, eps=args.eps, clusters=args.clusters, arch=args.arch)
        else:
            with engine_from_args(args) as engine:
                stats = run_dedup(args.pool, args.method, engine=engine, max_distance=args.max_distance, keep=args.keep,
                                  score_column=args.score_column, eps=args.eps, clusters=args.clusters, arch=args.arch)
    print(f"dedup {stats['method']}: {stats['rows_grouped']} of {stats['rows']} rows in {stats['groups']} groups "
          f"({stats['groups_with_duplicates']} with duplicates, largest {stats['largest_group']}); keep {stats['kept']}, "
          f"remove {stats['removed_as_duplicates']} ({stats['seconds']} s on {stats['engine']})")
    if stats.get("plan"):
        print(f"  plan: {stats['plan']}")
    if "chance_pairs_below_1pct_at_max_distance" in stats:
        print(f"  WARNING: were these {stats['distinct_hashes']:,} distinct hashes uniform random, ~{stats['chance_pairs_if_uniform']:,} "
              f"pairs of them would lie within D={stats['max_distance']} bits by chance alone (real pHashes share more bits, "
              f"so likely more), joining unrelated images into groups; this grows as the square of the pool. "
              f"--max-distance {stats['chance_pairs_below_1pct_at_max_distance']} keeps chance pairs under 1% of the hashes.", file=sys.stderr)
    if stats.get("without_value"):
        print(f"  {stats['without_value']} rows have no {stats['method']} value (not grouped; the dedup filter rejects them): "
              f"{json.dumps(stats.get('without_value_by_status', {}))}")
    if stats.get("malformed"):
        print(f"  WARNING: {stats['malformed']} malformed {stats['method']} values (not grouped), e.g. "
              f"{json.dumps(stats['malformed_examples'])}", file=sys.stderr)
    print(f"  columns: {stats['output']}")
    return 0
