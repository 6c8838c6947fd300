"""Engines run one function over many per-shard work items: locally, on Dask, or on Spark.

An engine knows nothing about images or filters: it takes a picklable top-level function and a list of
small items (paths and parameters) and returns the results in item order (`map`), so every engine produces the
same output for the same input; or hands each result back as its task finishes (`imap_unordered`), for a caller
that folds them into running totals and so holds none of them for long.
"""

from __future__ import annotations

from curate.engines.base import Engine, EngineTaskError
from curate.engines.cluster import DEFAULT_WAIT_S, ClusterError, SharedPaths
from curate.engines.local import LocalEngine

ENGINE_NAMES = ("local", "dask", "spark")


def make_engine(
    name: str = "local",
    *,
    processes: int | None = None,
    dask_scheduler: str | None = None,
    spark_master: str | None = None,
    shared_paths: SharedPaths | None = None,
    cluster_wait: float = DEFAULT_WAIT_S,
) -> Engine:
    """Build the engine a command line asked for (`--engine`, `--processes`, cluster addresses).

    On a real cluster (a scheduler or master address), every worker must see `shared_paths`, and the
    cluster must offer a worker within `cluster_wait` seconds; otherwise a ClusterError says which."""
    if name == "local":
        return LocalEngine(processes=processes)
    if name == "dask":
        from curate.engines.dask_engine import DaskEngine

        return DaskEngine(processes=processes, scheduler=dask_scheduler, shared_paths=shared_paths, wait=cluster_wait)
    if name == "spark":
        from curate.engines.spark_engine import SparkEngine

        return SparkEngine(processes=processes, master=spark_master, shared_paths=shared_paths, wait=cluster_wait)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")


__all__ = ["ENGINE_NAMES", "ClusterError", "Engine", "EngineTaskError", "LocalEngine", "SharedPaths", "make_engine"]
