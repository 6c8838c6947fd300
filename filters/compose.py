"""Filters combined with and / or / not, as recipes write them.

A combination is itself a filter: its columns and pool requests are those of its parts, `bind` binds
every part, and `apply` combines the parts' masks. `and` applies each part only to the rows the parts
before it kept (so an expensive filter sees fewer rows); `or` and `not` apply every part to the same rows.
Each combination's result records how many rows each part saw and kept (`FilterResult.parts`, nested for
nested combinations), for the funnel in stats.json.
These classes have no registry name: recipes build them from `and:`, `or:` and `not:` keys.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from filters.base import Filter, FilterResult


class _Combination(Filter):
    name = ""  # not registered: built by recipes
    op = ""

    def __init__(self, parts: list[Filter]):
        self.parts = list(parts)
        self.columns = tuple(dict.fromkeys(c for p in self.parts for c in p.columns))

    def label(self) -> str:
        return f"{self.op}({', '.join(p.label() for p in self.parts)})"

    def params(self) -> dict:
        return {"op": self.op, "parts": [{"name": p.label(), **p.params()} for p in self.parts]}

    def requests(self) -> list:
        out = []
        for p in self.parts:
            for r in p.requests():
                if r not in out:
                    out.append(r)
        return out

    def bind(self, resolved: dict) -> "Filter":
        return type(self)([p.bind(resolved) for p in self.parts])

    def score_thresholds(self) -> list[tuple[str, float]]:
        return [t for p in self.parts for t in p.score_thresholds()]

    def leaves(self) -> list[Filter]:
        out = []
        for p in self.parts:
            out.extend(p.leaves() if isinstance(p, _Combination) else [p])
        return out


class AllOf(_Combination):
    """Rows every part keeps; each part sees only the rows the parts before it kept."""

    op = "and"

    def apply(self, table: pa.Table) -> FilterResult:
        n = table.num_rows
        keep = np.ones(n, dtype=bool)
        failed: dict[str, np.ndarray] = {}
        counts = []
        for p in self.parts:
            idx = np.flatnonzero(keep)
            res = p.apply(table.take(pa.array(idx)) if len(idx) < n else table)
            counts.append(_count(p, len(idx), res))
            for rule, mask in res.failed.items():
                full = failed.setdefault(f"{p.label()}:{rule}", np.zeros(n, dtype=bool))
                full[idx[np.asarray(mask, dtype=bool)]] = True
            keep = np.zeros(n, dtype=bool)
            keep[idx[res.keep]] = True
        return FilterResult(keep=keep, failed=failed, parts=counts)


class AnyOf(_Combination):
    """Rows at least one part keeps (every part sees every row)."""

    op = "or"

    def apply(self, table: pa.Table) -> FilterResult:
        n = table.num_rows
        keep = np.zeros(n, dtype=bool)
        counts = []
        for p in self.parts:
            res = p.apply(table)
            counts.append(_count(p, n, res))
            keep |= res.keep
        return FilterResult(keep=keep, failed={f"none_of({', '.join(p.label() for p in self.parts)})": ~keep}, parts=counts)


class Not(_Combination):
    """Rows the part rejects."""

    op = "not"

    def __init__(self, parts: list[Filter]):
        if len(parts) != 1:
            raise ValueError("not takes exactly one filter")
        super().__init__(parts)

    def apply(self, table: pa.Table) -> FilterResult:
        res = self.parts[0].apply(table)
        keep = ~res.keep
        return FilterResult(keep=keep, failed={f"kept_by({self.parts[0].label()})": res.keep.copy()},
                            parts=[_count(self.parts[0], table.num_rows, res)])

    def score_thresholds(self) -> list[tuple[str, float]]:
        return self.parts[0].score_thresholds()


def _count(part: Filter, rows_in: int, res: FilterResult) -> dict:
    out = {"filter": part.label(), "rows_in": int(rows_in), "kept": int(np.asarray(res.keep).sum())}
    if res.parts:
        out["parts"] = res.parts
    return out
