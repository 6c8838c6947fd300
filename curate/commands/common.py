"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import re

from curate import progress
from curate.engines import ENGINE_NAMES, SharedPaths, make_engine
from curate.engines.cluster import DEFAULT_WAIT_S

# Options that name a file or folder: made absolute before anything leaves this process, because a cluster's
# workers run in other folders (a Dask worker where it was started, a Spark executor in its work folder).
PATH_OPTIONS = ("pool", "output", "subset", "url_list", "eval_dir", "eval_embeddings", "config", "fasttext_model",
                "aesthetic_weights", "model_config", "workdir")
TAG_OR_PATH_OPTIONS = ("pretrained", "aesthetic_pretrained")  # a path only when such a file exists here
TAGGED_PATH_OPTIONS = ("clip_checkpoint",)  # TAG=PATH
# Inputs every cluster worker reads, and where each command writes (the pool itself when it has no --output).
WORKER_INPUTS = {"pool": "--pool", "subset": "--subset", "url_list": "--url-list", "eval_dir": "--eval-dir"}


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (where per-shard work runs)")
    g.add_argument("--engine", choices=ENGINE_NAMES, default="local", help="local process pool (default), Dask, or Spark")
    g.add_argument("--processes", type=int, default=None, help="worker processes (default: CPU cores)")
    g.add_argument("--dask-scheduler", default=None, metavar="ADDRESS", help="tcp://host:port of a running Dask scheduler (default: start a LocalCluster)")
    g.add_argument("--spark-master", default=None, metavar="URL", help="spark://host:port of a Spark cluster (default: local[N])")
    g.add_argument("--cluster-wait", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                   help=f"with --dask-scheduler/--spark-master: how long to wait for a first worker or executor "
                        f"(default {DEFAULT_WAIT_S:g})")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (by default a bar in a terminal, else a line every 10 s and at the end)")


def engine_from_args(args):
    progress.configure(not args.no_progress)  # this command's bars, the engine's included
    return make_engine(args.engine, processes=args.processes, dask_scheduler=args.dask_scheduler,
                       spark_master=args.spark_master, shared_paths=shared_paths(args), cluster_wait=args.cluster_wait)


def shared_paths(args) -> SharedPaths:
    """What a cluster's workers must see: the inputs that exist here, and the output (or the pool they write to).
    URLs (an s3:// pool) are the object store's to check, not the workers' filesystems."""
    read = {flag: getattr(args, dest) for dest, flag in WORKER_INPUTS.items()
            if getattr(args, dest, None) and os.path.exists(getattr(args, dest))}
    output = getattr(args, "output", None) or getattr(args, "pool", None)
    write = {} if not output or _is_url(output) else {"--output" if getattr(args, "output", None) else "--pool": output}
    return SharedPaths(read=read, write=write)


def absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Make every path option absolute (a URL with a scheme stays as it is), in place; returns `args`."""
    for dest in PATH_OPTIONS:
        setattr(args, dest, _absolute(getattr(args, dest, None)))
    for dest in TAG_OR_PATH_OPTIONS:
        value = getattr(args, dest, None)
        if isinstance(value, list):
            setattr(args, dest, [_absolute(v) if v and os.path.exists(v) else v for v in value])
        elif value and os.path.exists(value):
            setattr(args, dest, _absolute(value))
    for dest in TAGGED_PATH_OPTIONS:
        if getattr(args, dest, None):
            setattr(args, dest, [f"{t}={_absolute(p)}" if sep else t for t, sep, p in (v.partition("=") for v in getattr(args, dest))])
    if getattr(args, "overrides", None):
        args.overrides = [_absolute_override(item) for item in args.overrides]
    return args


def _absolute_override(item: str) -> str:
    """`--set FILTER.PARAM=VALUE` with VALUE made absolute when PARAM is one of the filter's path parameters."""
    from filters.registry import FILTERS

    head, sep, value = item.partition("=")
    name, _, param = head.partition(".")
    if sep and value and name in FILTERS and param in FILTERS[name].path_params:
        return f"{head}={_absolute(value)}"
    return item


def _absolute(value):
    if not isinstance(value, str) or not value or _is_url(value):
        return value
    return os.path.abspath(os.path.expanduser(value))


def _is_url(value: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value) is not None
