"""Spark engine: one RDD partition per item on a SparkSession (`local[N]` or a cluster master URL)."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

from curate.engines.base import Engine, EngineTaskError, default_processes
from curate.progress import Progress


class SparkEngine(Engine):
    """Maps items as an RDD with one partition each; collects results back in item order."""

    name = "spark"

    def __init__(self, processes: int | None = None, master: str | None = None):
        from pyspark.sql import SparkSession

        # Workers must run the same Python (and so see this package) as the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        self._owned = SparkSession.getActiveSession() is None
        self.spark = (
            SparkSession.builder.master(master or f"local[{processes or default_processes()}]")
            .appName("curate")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", os.environ.get("CURATE_SPARK_DRIVER_MEMORY", "4g"))
            .config("spark.python.worker.reuse", "true")
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None) -> list[Any]:
        items = list(items)
        if not items:
            return []
        rdd = self.spark.sparkContext.parallelize(list(enumerate(items)), numSlices=len(items))
        with Progress(desc, len(items)) as bar:
            bar.note(f"{bar.meter.desc if bar.meter else desc}: {len(items)} tasks on Spark {self.spark.sparkContext.master}")
            try:
                pairs = rdd.map(lambda pair: (pair[0], fn(pair[1]))).collect()
            except Exception as e:  # Py4J wraps the worker's traceback; keep its last line readable
                raise EngineTaskError(f"a Spark task failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from e
            results: list[Any] = [None] * len(items)
            for i, value in pairs:
                results[i] = value
                bar.task_done(value)  # collect() hands every result back at once
        return results

    def map_shared(self, fn: Callable[..., Any], items: Sequence[Any], shared: Any, desc: str | None = None) -> list[Any]:
        items = list(items)
        if not items:
            return []
        value = self.spark.sparkContext.broadcast(shared)  # shipped to each executor once
        try:
            return self.map(lambda item: fn(item, shared=value.value), items, desc)
        finally:
            value.destroy()

    def close(self) -> None:
        if self._owned:
            self.spark.stop()
