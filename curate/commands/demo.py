"""`curate demo`: the built-in demo on generated data."""

from __future__ import annotations

NAME = "demo"
ORDER = 90
HELP = "build a small pool, serve it on loopback, download and filter it"
DESCRIPTION = ("A CommonPool in miniature, made here: generated images and captions (some broken), served "
               "on 127.0.0.1, downloaded with `curate download`, filtered with `curate run --filter clip_score`.")


def add_arguments(p) -> None:
    p.add_argument("--workdir", default="demo_out")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=2)


def main(args) -> int:
    from curate.demo.run import run_demo

    return run_demo(workdir=args.workdir, samples=args.samples, seed=args.seed, processes=args.processes)
