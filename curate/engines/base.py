"""The engine contract shared by the local, Dask and Spark engines."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterator, Sequence


class EngineTaskError(RuntimeError):
    """A work item failed; carries which item, so the user knows which shard to look at."""


def default_processes() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class Engine:
    """Map a function over work items: all results in item order (`map`), or each as its task finishes
    (`imap_unordered`). An engine implements at least one of the two."""

    name = "base"

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None) -> list[Any]:
        """`desc`: the progress label, or a `curate.progress.Meter` (what each task's result adds); None: no bar."""
        items = list(items)
        results: list[Any] = [None] * len(items)
        for i, value in self.imap_unordered(fn, items, desc):
            results[i] = value
        return results

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None) -> Iterator[tuple[int, Any]]:
        """(item index, result) for each item as its task finishes, in any order, for a caller that folds results
        into running totals: the engine holds only results not yet handed over, so the caller's memory need
        not grow with the number of items. Same `desc` and errors as `map`. (This default holds all: `map`'s.)"""
        yield from enumerate(self.map(fn, items, desc))

    def map_shared(self, fn: Callable[..., Any], items: Sequence[Any], shared: Any, desc: str | None = None) -> list[Any]:
        """`fn(item, shared=shared)` for each item, where `shared` is one larger read-only value every task
        needs (lookup tables, eval hashes): engines with workers send it to each worker once, not per task."""
        return self.map(functools.partial(fn, shared=shared), items, desc)

    def close(self) -> None:
        """Release what the engine started (worker processes, clusters, sessions)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def task_result(get: Callable[[], Any], item: Any) -> Any:
    """`get()` (a task's call or its future's result): our own input errors (ValueError, which already name the
    file and the problem) as they are, any other failure as one EngineTaskError naming the item."""
    try:
        return get()
    except ValueError:
        raise
    except Exception as e:
        raise EngineTaskError(f"task {describe_item(item)} failed: {e}") from e


def describe_item(item: Any) -> str:
    """A short label for a work item in error messages."""
    text = repr(item)
    return text if len(text) <= 200 else text[:197] + "..."
