"""The default engine: a process pool on this machine (or inline, for one process)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

from curate.engines.base import Engine, EngineTaskError, default_processes, describe_item
from curate.progress import Progress


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

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None) -> list[Any]:
        items = list(items)
        results: list[Any] = [None] * len(items)
        with Progress(desc, len(items)) as bar:
            if self.processes <= 1 or len(items) <= 1:
                for i, item in enumerate(items):
                    try:
                        results[i] = fn(item)
                    except ValueError:
                        raise
                    except Exception as e:
                        raise EngineTaskError(f"task {describe_item(item)} failed: {e}") from e
                    bar.task_done(results[i])
                return results
            pool = self._executor()
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except ValueError:
                    for other in futures:
                        other.cancel()
                    raise  # our own input errors already name the file and the problem
                except Exception as e:
                    for other in futures:
                        other.cancel()
                    raise EngineTaskError(f"task {describe_item(items[i])} failed: {e}") from e
                bar.task_done(results[i])
            return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
