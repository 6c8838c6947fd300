"""`curate decontaminate`: mark pool samples whose image is a (near) copy of an evaluation image."""

from __future__ import annotations

import json

from curate.commands.common import add_engine_arguments, engine_from_args

NAME = "decontaminate"
ORDER = 26
HELP = "mark pool images that match evaluation images (pHash within D bits, optionally CLIP cosine)"
DESCRIPTION = ("Hashes every image of the eval sets under --eval-dir (wds_<task>_test/test/*.tar), matches them "
               "against the pool's pHash column, and writes POOL/columns/decontam/ (uid, contaminated) for the "
               "`decontaminated` filter and POOL/decontamination_report.parquet (one row per match).")


def add_arguments(p) -> None:
    p.add_argument("--pool", required=True)
    p.add_argument("--eval-dir", required=True, help="folder (or s3:// prefix) holding wds_<task>_test eval sets")
    p.add_argument("--max-distance", type=int, default=4, metavar="D", help="pHash Hamming distance in bits (default 4)")
    p.add_argument("--min-cosine", type=float, default=None, metavar="C", help="with --eval-embeddings: cosine >= C is a match")
    p.add_argument("--eval-embeddings", default=None, metavar="NPZ",
                   help="eval image embeddings from the pool's CLIP model (a file or an s3:// object): npz with embeddings, eval_set, eval_key")
    p.add_argument("--arch", default="l14", metavar="TAG",
                   help="which pool image embeddings to compare with: l14, b32, or the --clip-tag of a stage run (default l14)")
    add_engine_arguments(p)


def main(args) -> int:
    from curate.atomic import remove_stale_temporaries
    from curate.decontaminate import run_decontaminate
    from curate.pool import Pool

    Pool(args.pool)  # a missing pool is named as such, not as a missing stage
    remove_stale_temporaries(args.pool, f"{args.pool}/columns")  # left by a killed run (stats, report)

    options = dict(max_distance=args.max_distance, min_cosine=args.min_cosine, eval_embeddings=args.eval_embeddings, arch=args.arch)
    if args.engine == "local":
        s = run_decontaminate(args.pool, args.eval_dir, **options)  # in this process: the search is vectorised numpy
    else:
        with engine_from_args(args) as engine:
            s = run_decontaminate(args.pool, args.eval_dir, engine=engine, **options)
    print(f"decontaminate: {s['eval_images']} eval images vs {s['pool_rows_checked']} pool pHashes "
          f"(D={s['max_distance']}): {s['contaminated']} contaminated pool samples, {s['phash_matches']} pHash matches, "
          f"{s['cosine_matches']} cosine matches ({s['seconds']} s on {s['engine']})")
    for name, c in s["per_eval_set"].items():
        if c["matches"]:
            print(f"  {name:24s} {c['pool_samples']} pool samples, {c['matches']} matches")
    if s["eval_images_failed"]:
        print(f"  eval images that failed to decode: {json.dumps(s['eval_images_failed'])}")
    if s["pool_rows_without_phash"] or s["pool_rows_malformed_phash"]:
        print(f"  not checked: {s['pool_rows_without_phash']} pool rows without a pHash, "
              f"{s['pool_rows_malformed_phash']} with a malformed one (contaminated is null)")
    print(f"  report: {s['report']}")
    return 0
