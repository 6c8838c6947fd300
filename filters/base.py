"""What a filter is: a metadata table in, a keep mask out, with the reason each rejected row failed.

Filters are pure: no I/O and no engines. A filter that needs something computed over the whole pool asks
for it with a *pool request*; the runner resolves every request across all partitions (on the engine) and
hands the values back through `bind`, so each partition can then be filtered on its own:

- `RankRequest`: the value at a rank of a column over the whole pool (DataComp's fraction thresholds),
  found exactly by a radix select (curate.rank).
- `GatherRequest`: a general map-reduce. `step.map(table)` runs on every partition (the table holds `uid`
  and `step.columns`, valid uids only); `step.reduce(parts)` runs once on the list of results, in partition
  order (k-means on a sample of embeddings, MetaCLIP entry counts, ...).
- `FileRequest`: the contents of a file the user named (a .npy array, or the lines of a text file); the
  runner reads it, so filters never touch the file system.

`bind` may return a filter that asks for more (a k-means needs the pool's row count before it can choose
its sample); the runner repeats until no request is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class RankRequest:
    """The value at 0-based rank `int(N * fraction)` of `column` over the whole pool sorted descending.

    N counts every row, missing scores included, as DataComp's `get_threshold` does with NaNs sorted last.
    """

    column: str
    fraction: float


@dataclass(frozen=True)
class GatherRequest:
    """Map `step.map` over every partition's table, then `step.reduce(list_of_results)` once.

    `key` names the request (equal keys are resolved once); `step` must be picklable (an instance of a
    top-level class), since it travels to the engine's workers.
    """

    key: str
    step: object = field(compare=False, hash=False)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(getattr(self.step, "columns", ()))


@dataclass(frozen=True)
class FileRequest:
    """A file the user named: `kind` "npy" gives a numpy array, "lines" a list of stripped non-empty lines
    (lines starting with # are comments)."""

    path: str
    kind: str = "npy"


@dataclass
class FilterResult:
    """`keep[i]` for each row, and `failed[rule][i]` for each rule the row broke (a row may break several).

    A combination of filters also lists, in `parts`, the rows each of its parts saw and kept.
    """

    keep: np.ndarray
    failed: dict[str, np.ndarray] = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)

    @classmethod
    def from_rules(cls, n: int, rules: dict[str, np.ndarray]) -> "FilterResult":
        """Keep the rows that break none of `rules` (each a boolean 'failed' array)."""
        keep = np.ones(n, dtype=bool)
        for failed in rules.values():
            keep &= ~failed
        return cls(keep=keep, failed=rules)

    def first_failed_rule(self) -> dict[str, int]:
        """Rejected rows counted once each, by the first rule (in rule order) they broke."""
        counts: dict[str, int] = {}
        remaining = ~self.keep
        for rule, failed in self.failed.items():
            hit = remaining & failed
            counts[rule] = int(hit.sum())
            remaining = remaining & ~failed
        leftover = int(remaining.sum())
        if leftover:
            counts["other"] = leftover
        return counts


class Filter:
    """Base class. Subclasses set `name`, `columns` and implement `apply`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: metadata columns (or computed signals such as `language`) this filter reads
    columns: tuple[str, ...] = ()

    def params(self) -> dict:
        """The parameters that define this filter, for stats files and reports."""
        return {}

    #: parameters that name files (resolved against a recipe's folder)
    path_params: ClassVar[tuple[str, ...]] = ()

    def rank_requests(self) -> list[RankRequest]:
        return []

    def requests(self) -> list:
        """Every pool request (RankRequest, GatherRequest, FileRequest) this filter still needs."""
        return list(self.rank_requests())

    def bind(self, resolved: dict) -> "Filter":
        """Return a filter whose pool-wide values are filled in (itself when it needs none)."""
        return self

    def score_thresholds(self) -> list[tuple[str, float]]:
        """(score column, threshold) pairs this (bound) filter compares with `>=`, for reports and range checks."""
        return []

    def label(self) -> str:
        """A short name with the parameters that matter, for funnels and reports."""
        return self.name

    def apply(self, table: pa.Table) -> FilterResult:
        raise NotImplementedError


class FilterConfigError(ValueError):
    """Unknown filter name, or parameters a filter cannot take."""
