"""Spark engine: one RDD partition per item on a SparkSession (`local[N]` or a cluster master URL)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from curate.engines.base import Engine, EngineTaskError, default_processes
from curate.engines.cluster import (DEFAULT_WAIT_S, ClusterError, SharedPaths, raise_if_blind, require_reachable,
                                    worker_view)
from curate.progress import Progress


#: What the object-store layer reads from the environment (credentials, endpoint, region, fsspec's settings).
STORAGE_ENV_PREFIXES = ("AWS_", "FSSPEC_")


def _pass_storage_environment(sc) -> None:
    """On `local[N]`, give the Python workers this process's object-store variables as they are now.

    The workers' environment is the JVM's, fixed when the first session of this process started it (a later
    `export AWS_...`, or a test's, would not reach them); PySpark adds `sc.environment` to every worker it
    starts. Only for a local master: on a cluster the workers' own environment holds their credentials, and
    we do not ship ours over the network.
    """
    for key, value in os.environ.items():
        if key.startswith(STORAGE_ENV_PREFIXES):
            sc.environment[key] = value


class _TaskWatcher(threading.Thread):
    """Counts the finished tasks of this thread's next Spark job into a bar while collect() waits for all of
    them (Spark hands results back only at the end); their results' counts are added when they come back."""

    def __init__(self, sc, bar, total: int):
        super().__init__(name="spark-progress", daemon=True)
        self.sc, self.bar, self.total = sc, bar, total
        self.group = f"curate-{uuid.uuid4().hex}"
        self.counted = 0
        self.stop = threading.Event()
        sc.setJobGroup(self.group, bar.meter.desc)  # jobs this thread starts from now on
        self.start()

    def run(self) -> None:
        tracker = self.sc.statusTracker()
        while not self.stop.wait(1.0):
            try:
                done = sum(stage.numCompletedTasks
                           for job in tracker.getJobIdsForGroup(self.group)
                           for sid in (getattr(tracker.getJobInfo(job), "stageIds", None) or ())
                           if (stage := tracker.getStageInfo(sid)) is not None)
            except Exception:  # progress only: a context going away must not fail the map
                return
            done = min(done, self.total)
            if done > self.counted:
                self.bar.update(done - self.counted)
                self.counted = done

    def finish(self) -> int:
        """Stop watching; returns the tasks already counted."""
        self.stop.set()
        self.join()
        with contextlib.suppress(Exception):
            self.sc.setLocalProperty("spark.jobGroup.id", None)  # later jobs of this thread: no group
        return self.counted

LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")


class SparkEngine(Engine):
    """Maps items as an RDD with one partition each; collects results back in item order."""

    name = "spark"

    def __init__(self, processes: int | None = None, master: str | None = None,
                 shared_paths: SharedPaths | None = None, wait: float = DEFAULT_WAIT_S):
        from pyspark.sql import SparkSession

        cluster = bool(master) and not master.startswith("local")
        if cluster and master.startswith("spark://"):
            require_reachable(master, "Spark master")  # Spark's own client retries a dead master for a minute

        # Workers must run the same Python (and so see this package) as the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        self._owned = SparkSession.getActiveSession() is None
        builder = (
            SparkSession.builder.master(master or f"local[{processes or default_processes()}]")
            .appName("curate")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", os.environ.get("CURATE_SPARK_DRIVER_MEMORY", "4g"))
            .config("spark.python.worker.reuse", "true")
        )
        if LOG_CONFIG.exists():
            builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}")
        self.spark = builder.getOrCreate()
        self.spark.sparkContext.setLogLevel("ERROR")
        if not cluster:
            _pass_storage_environment(self.spark.sparkContext)
        if cluster:
            try:
                _wait_for_executors(self.spark.sparkContext, master, wait)
                if shared_paths:
                    raise_if_blind(_executor_views(self.spark.sparkContext, shared_paths))
            except BaseException:
                self.close()
                raise

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None) -> list[Any]:
        items = list(items)
        if not items:
            return []
        sc = self.spark.sparkContext
        rdd = sc.parallelize(list(enumerate(items)), numSlices=len(items))
        with Progress(desc, len(items)) as bar:
            bar.note(f"{bar.meter.desc if bar.meter else desc}: {len(items)} tasks on Spark {sc.master}")
            watcher = _TaskWatcher(sc, bar, len(items)) if bar.mode != "off" else None
            try:
                pairs = rdd.map(lambda pair: (pair[0], fn(pair[1]))).collect()
            except Exception as e:  # Py4J wraps the worker's traceback; keep its last line readable
                raise EngineTaskError(f"a Spark task failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from e
            finally:
                counted = watcher.finish() if watcher is not None else 0
            results: list[Any] = [None] * len(items)
            for i, value in pairs:
                results[i] = value
                bar.task_done(value, tasks=0)  # collect() hands every result back at once, at the end
            bar.update(len(items) - counted)
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


def _wait_for_executors(sc, master: str, wait: float) -> None:
    """Return once the application has an executor; a master with no free worker otherwise queues it forever."""
    deadline = time.monotonic() + wait
    while sc._jsc.sc().getExecutorMemoryStatus().size() < 2:  # the driver's block manager is always listed
        if sc._jsc.sc().isStopped():
            raise ClusterError(f"Spark master {master} stopped this application before it got an executor "
                               f"(is it a Spark master of the same version?)")
        if time.monotonic() > deadline:
            memory = sc.getConf().get("spark.executor.memory", "1g")
            raise ClusterError(f"Spark master {master} gave no executor in {wait:g} s: no worker is registered with "
                               f"it, or none has a free core and {memory} of memory (or give --cluster-wait more seconds)")
        time.sleep(0.2)


def _executor_views(sc, paths: SharedPaths) -> dict[str, tuple[str, list[str]]]:
    """worker_view run in a task on each slot the executors offer, keyed by host and executor folder."""
    def view(_):
        host, problems = worker_view(paths)
        return f"Spark executor {os.path.basename(os.getcwd())}", (host, problems)  # cwd: work/<app>/<executor id>

    slots = max(1, sc.defaultParallelism)
    return dict(sc.parallelize(range(slots), slots).map(view).collect())
