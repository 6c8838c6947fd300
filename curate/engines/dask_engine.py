"""Dask engine: a `distributed.Client` on a LocalCluster, or on a real cluster by scheduler address."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence

from curate.engines.base import Engine, default_processes, task_result
from curate.engines.cluster import (CONNECT_TIMEOUT_S, DEFAULT_WAIT_S, ClusterError, SharedPaths, one_line,
                                    raise_if_blind, require_reachable, worker_view)
from curate.progress import Progress

#: `imap_unordered` keeps about IN_FLIGHT tasks per worker thread submitted (at least MIN_IN_FLIGHT), a chunk at a time
IN_FLIGHT = 4
MIN_IN_FLIGHT = 64


class DaskEngine(Engine):
    """Submits one Dask task per item; results are handed back as tasks finish (`map`: in item order)."""

    name = "dask"

    def __init__(self, processes: int | None = None, scheduler: str | None = None,
                 shared_paths: SharedPaths | None = None, wait: float = DEFAULT_WAIT_S):
        from distributed import Client, LocalCluster

        self._cluster = None
        if scheduler:
            self.client = _connect(scheduler, wait)
            if shared_paths:
                try:
                    views = self.client.run(worker_view, shared_paths)
                    raise_if_blind({f"Dask worker {address}": view for address, view in views.items()})
                except BaseException:
                    self.client.close()
                    raise
        else:
            self._cluster = LocalCluster(
                n_workers=processes or default_processes(),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,  # a failed task is our one-line error, not a worker log too
            )
            self.client = Client(self._cluster)

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None) -> Iterator[tuple[int, Any]]:
        items = list(items)
        return self._as_completed(lambda chunk: self.client.map(fn, chunk, pure=False), items, desc)

    def map_shared(self, fn: Callable[..., Any], items: Sequence[Any], shared: Any, desc: str | None = None) -> list[Any]:
        items = list(items)
        if not items:
            return []
        (value,) = self.client.scatter([shared], broadcast=True, hash=False)  # a list: `shared` stays one object
        try:
            results: list[Any] = [None] * len(items)
            for i, result in self._as_completed(lambda chunk: self.client.map(fn, chunk, shared=value, pure=False), items, desc):
                results[i] = result
            return results
        finally:
            self.client.cancel([value])

    def _as_completed(self, submit: Callable[[list], list], items: list, desc: str | None) -> Iterator[tuple[int, Any]]:
        """(index, result) of each item as its task finishes. Tasks are submitted `submit(chunk)` a chunk at a
        time, keeping about IN_FLIGHT x the cluster's threads (at least MIN_IN_FLIGHT) in flight, and a future
        is released once its result is fetched: neither the workers nor this process keep results already
        handed over, nor a future per item."""
        from distributed import as_completed

        if not items:
            return
        threads = sum(self.client.nthreads().values())
        window = max(MIN_IN_FLIGHT, IN_FLIGHT * threads)
        pending: dict = {}  # future key -> (index, future)
        done = as_completed(loop=self.client.loop)
        submitted = 0

        def refill() -> None:
            nonlocal submitted
            if submitted < len(items) and len(pending) <= window // 2:
                chunk = range(submitted, min(len(items), submitted + window - len(pending)))
                futures = submit([items[i] for i in chunk])
                pending.update((f.key, (i, f)) for i, f in zip(chunk, futures))
                done.update(futures)
                submitted = chunk.stop

        with Progress(desc, len(items)) as bar:
            try:
                refill()
                for fut in done:
                    i, _ = pending.pop(fut.key)
                    result = task_result(fut.result, items[i])
                    fut.release()
                    del fut
                    refill()
                    bar.task_done(result)
                    yield i, result
            finally:
                if pending:  # a task failed or the caller stopped early
                    self.client.cancel([f for _, f in pending.values()])

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _connect(scheduler: str, wait: float):
    """A Client on a running scheduler that has a worker, or one ClusterError line within seconds."""
    from distributed import Client

    require_reachable(scheduler, "Dask scheduler")
    _require_scheduler(scheduler)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except Exception as e:
        raise ClusterError(f"cannot reach Dask scheduler {scheduler}: {one_line(e)}") from None
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:
        client.close()
        raise ClusterError(f"Dask scheduler {scheduler} has no worker after {wait:g} s: start one with "
                           f"`dask worker {scheduler}` (or give --cluster-wait more seconds)") from None
    return client


def _require_scheduler(scheduler: str) -> None:
    """Ask what answers at the address, within a bound: distributed's Client waits for a handshake without one,
    so a port that accepts and stays silent would hang it."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def identity():
        comm = await connect(scheduler, timeout=CONNECT_TIMEOUT_S)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def ask():  # in a thread of its own, so a caller's running event loop is no obstacle
        return asyncio.run(asyncio.wait_for(identity(), CONNECT_TIMEOUT_S))

    try:
        with ThreadPoolExecutor(1) as pool:
            reply = pool.submit(ask).result()
    except (asyncio.TimeoutError, TimeoutError):
        raise ClusterError(f"cannot reach Dask scheduler {scheduler}: it accepts connections but does not answer "
                           f"in {CONNECT_TIMEOUT_S:g} s") from None
    except Exception as e:  # e.g. another protocol's bytes read as a 3 EiB frame length
        raise ClusterError(f"cannot reach Dask scheduler {scheduler}: what answers there is not a Dask scheduler "
                           f"({type(e).__name__}: {one_line(e)[:200]})") from None
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
        raise ClusterError(f"cannot reach Dask scheduler {scheduler}: what answers there is a {kind}, not a scheduler")
