"""The default engine: a process pool on this machine (or inline, for one process)."""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

from curate.engines.base import Engine, default_processes, task_result
from curate.progress import Progress

IN_FLIGHT = 4  # tasks submitted at once per worker process (`imap_unordered`)


class LocalEngine(Engine):
    """Runs items in a pool of `processes` worker processes; with one process, in this process."""

    name = "local"

    def __init__(self, processes: int | None = None):
        self.processes = processes or default_processes()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: workers may use torch or threads, which do not survive a fork.
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None) -> Iterator[tuple[int, Any]]:
        """Each (index, result) as its task finishes. Tasks are submitted a window at a time and a finished one
        is dropped once handed over, so neither the tasks nor their results pile up here however many items
        there are. A caller that stops early cancels the tasks not started."""
        items = list(items)
        with Progress(desc, len(items)) as bar:
            if self.processes <= 1 or len(items) <= 1:
                for i, item in enumerate(items):
                    result = task_result(lambda: fn(item), item)
                    bar.task_done(result)
                    yield i, result
                return
            pool = self._executor()
            todo = iter(enumerate(items))
            futures: dict = {}  # in flight: at most IN_FLIGHT x processes, so the workers never wait for work
            try:
                while True:
                    for i, item in itertools.islice(todo, IN_FLIGHT * self.processes - len(futures)):
                        futures[pool.submit(fn, item)] = i
                    if not futures:
                        return
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = futures.pop(fut)
                        result = task_result(fut.result, items[i])
                        bar.task_done(result)
                        yield i, result
                    del done, fut
            finally:
                for other in futures:  # left when a task failed or the caller stopped early
                    other.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
