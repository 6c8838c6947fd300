"""Spark engine: one RDD partition per item on a SparkSession (`local[N]` or a cluster master URL)."""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import uuid
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait as wait_for_futures
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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

    def __init__(self, sc, bar, total: int, group: str | None = None, lock: threading.Lock | None = None):
        super().__init__(name="spark-progress", daemon=True)
        self.sc, self.bar, self.total = sc, bar, total
        self.group = group or f"curate-{uuid.uuid4().hex}"
        self.lock = lock or threading.Lock()  # held while it updates the bar (another thread may add results)
        self.counted = 0
        self.stop = threading.Event()
        if group is None:
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
                with self.lock:
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

#: `imap_unordered` runs its items as jobs of BATCH_WAVES x the default parallelism tasks (at least MIN_BATCH),
#: IN_FLIGHT jobs at once (the next job's tasks fill the slots a job's last tasks leave idle): the driver, and the
#: JVM that collects a job's results, hold at most (IN_FLIGHT + 1) batches of results, not every item's
BATCH_WAVES = 4
MIN_BATCH = 256
IN_FLIGHT = 2


class SparkEngine(Engine):
    """Maps items as an RDD with one partition each; collects results back in item order (`map`: one job), or
    a batch of items at a time (`imap_unordered`: a job per batch)."""

    batch_tasks: int | None = None  # items per `imap_unordered` job (None: from BATCH_WAVES and MIN_BATCH)

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
                raise EngineTaskError(f"a Spark task failed: {_last_line(e)}") from e
            finally:
                counted = watcher.finish() if watcher is not None else 0
            results: list[Any] = [None] * len(items)
            for i, value in pairs:
                results[i] = value
                bar.task_done(value, tasks=0)  # collect() hands every result back at once, at the end
            bar.update(len(items) - counted)
        return results

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None) -> Iterator[tuple[int, Any]]:
        """Each (index, result) once the batch job that ran it finishes (Spark hands a job's results back only
        at its end); the tasks' progress is counted as they finish, as in `map`."""
        items = list(items)
        if not items:
            return
        sc = self.spark.sparkContext
        size = self.batch_tasks or max(MIN_BATCH, BATCH_WAVES * sc.defaultParallelism)
        batches = iter([range(s, min(s + size, len(items))) for s in range(0, len(items), size)])
        group = f"curate-{uuid.uuid4().hex}"
        lock = threading.Lock()

        def collect(batch: range) -> list:
            sc.setJobGroup(group, label)  # this batch thread's jobs: counted by the watcher, cancelled together
            rdd = sc.parallelize([(i, items[i]) for i in batch], numSlices=len(batch))
            try:
                return rdd.map(lambda pair: (pair[0], fn(pair[1]))).collect()
            except Exception as e:  # Py4J wraps the worker's traceback; keep its last line readable
                raise EngineTaskError(f"a Spark task failed: {_last_line(e)}") from e

        with Progress(desc, len(items)) as bar:
            label = bar.meter.desc if bar.meter else str(desc or "curate")
            bar.note(f"{label}: {len(items)} tasks on Spark {sc.master}, {size} a job")
            watcher = _TaskWatcher(sc, bar, len(items), group, lock) if bar.mode != "off" else None
            threads = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="spark-batch")
            running = {threads.submit(collect, b) for b in itertools.islice(batches, IN_FLIGHT)}
            try:
                while running:
                    done, running = wait_for_futures(running, return_when=FIRST_COMPLETED)
                    for job in done:
                        pairs = job.result()
                        running |= {threads.submit(collect, b) for b in itertools.islice(batches, 1)}
                        for i, value in pairs:
                            with lock:
                                bar.task_done(value, tasks=0)  # counted by the watcher as it finished
                            yield i, value
                        del pairs
            finally:
                if running:  # a batch failed or the caller stopped early
                    with contextlib.suppress(Exception):
                        sc.cancelJobGroup(group)
                threads.shutdown(wait=True, cancel_futures=True)
                counted = watcher.finish() if watcher is not None else 0
            bar.update(len(items) - counted)

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


def _last_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


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
