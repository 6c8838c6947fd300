"""What a filter is: a metadata table in, a keep mask out, with the reason each rejected row failed.

Filters are pure: no I/O and no engines. A filter that needs a value computed over the whole pool
(DataComp's fraction thresholds) asks for it with a `RankRequest`; the runner resolves it across all
partitions and hands the value back through `bind`, so each partition can then be filtered on its own.
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


@dataclass
class FilterResult:
    """`keep[i]` for each row, and `failed[rule][i]` for each rule the row broke (a row may break several)."""

    keep: np.ndarray
    failed: dict[str, np.ndarray] = field(default_factory=dict)

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

    def rank_requests(self) -> list[RankRequest]:
        return []

    def bind(self, resolved: dict[RankRequest, float]) -> "Filter":
        """Return a filter whose pool-wide values are filled in (itself when it needs none)."""
        return self

    def apply(self, table: pa.Table) -> FilterResult:
        raise NotImplementedError


class FilterConfigError(ValueError):
    """Unknown filter name, or parameters a filter cannot take."""
