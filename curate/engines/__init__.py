"""Engines run one function over many per-shard work items: locally, on Dask, or on Spark.

An engine knows nothing about images or filters: it takes a picklable top-level function and a list of
small items (paths and parameters) and returns the results in item order, so every engine produces the
same output for the same input.
"""

from __future__ import annotations

from curate.engines.base import Engine, EngineTaskError
from curate.engines.local import LocalEngine

ENGINE_NAMES = ("local", "dask", "spark")


def make_engine(
    name: str = "local",
    *,
    processes: int | None = None,
    dask_scheduler: str | None = None,
    spark_master: str | None = None,
) -> Engine:
    """Build the engine a command line asked for (`--engine`, `--processes`, cluster addresses)."""
    if name == "local":
        return LocalEngine(processes=processes)
    if name == "dask":
        from curate.engines.dask_engine import DaskEngine

        return DaskEngine(processes=processes, scheduler=dask_scheduler)
    if name == "spark":
        from curate.engines.spark_engine import SparkEngine

        return SparkEngine(processes=processes, master=spark_master)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")


__all__ = ["ENGINE_NAMES", "Engine", "EngineTaskError", "LocalEngine", "make_engine"]
