"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse

from curate import progress
from curate.engines import ENGINE_NAMES, make_engine


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (where per-shard work runs)")
    g.add_argument("--engine", choices=ENGINE_NAMES, default="local", help="local process pool (default), Dask, or Spark")
    g.add_argument("--processes", type=int, default=None, help="worker processes (default: CPU cores)")
    g.add_argument("--dask-scheduler", default=None, metavar="ADDRESS", help="tcp://host:port of a running Dask scheduler (default: start a LocalCluster)")
    g.add_argument("--spark-master", default=None, metavar="URL", help="spark://host:port of a Spark cluster (default: local[N])")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (by default a bar in a terminal, else a line every 10 s and at the end)")


def engine_from_args(args):
    progress.configure(not args.no_progress)  # this command's bars, the engine's included
    return make_engine(args.engine, processes=args.processes, dask_scheduler=args.dask_scheduler, spark_master=args.spark_master)
