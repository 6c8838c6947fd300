"""`curate demo`: the built-in demo on generated data."""

from __future__ import annotations

NAME = "demo"
ORDER = 90
HELP = "DataComp in miniature: pool, download, signals, filters, training, evaluation, leaderboard"
DESCRIPTION = ("A CommonPool in miniature, made here and served on 127.0.0.1 (generated images and captions with the "
               "noise real pools have), downloaded with `curate download`, scored by a small CLIP trained on a separate "
               "clean set, filtered with several recipes; each subset is trained at the same fixed budget and evaluated "
               "on generated zero-shot tasks, and a leaderboard ranks the recipes. About 10 minutes on 2 cores.")


def add_arguments(p) -> None:
    p.add_argument("--workdir", default="demo_out")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--clean-samples", type=int, default=1500, help="size of the clean set the scoring CLIP trains on")
    p.add_argument("--train-samples", type=int, default=None,
                   help="samples seen per training run (default: the tiny scale's budget; smaller for a quick look)")
    p.add_argument("--scorer-samples", type=int, default=None,
                   help="samples seen by the scoring CLIP (default: the tiny scale's budget)")
    p.add_argument("--recipes", nargs="+", default=None, help="a subset of the demo's recipes (default: all)")


def main(args) -> int:
    from curate.demo.run import run_demo

    from curate.demo.run import RECIPES, DemoStepError

    unknown = [r for r in (args.recipes or []) if r not in RECIPES]
    if unknown:
        raise ValueError(f"unknown demo recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    try:
        return run_demo(workdir=args.workdir, samples=args.samples, seed=args.seed, processes=args.processes,
                        clean_samples=args.clean_samples, train_samples=args.train_samples, recipes=args.recipes,
                        scorer_samples=args.scorer_samples)
    except DemoStepError as e:
        print(f"curate demo: {e}")
        return 1
