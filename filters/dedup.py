"""Filters over the columns `curate dedup` and `curate decontaminate` write (joined from the column store by uid)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.base import Filter, FilterConfigError, FilterResult

DEDUP_METHODS = ("phash", "sha256", "semantic")


def _bools(col) -> tuple[np.ndarray, np.ndarray]:
    """(value with nulls as False, null mask)."""
    missing = np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), dtype=bool)
    value = np.asarray(pc.fill_null(col.cast(pa.bool_()), False).to_numpy(zero_copy_only=False), dtype=bool)
    return value, missing


class Dedup(Filter):
    name = "dedup"
    description = ("One sample per duplicate group (from `curate dedup --method phash|sha256|semantic`): keeps rows whose "
                   "dedup_<method>_keep is true; rows with no value (never downloaded, no hash) are rejected as not_deduplicated.")

    def __init__(self, method: str = "phash"):
        if method not in DEDUP_METHODS:
            raise FilterConfigError(f"dedup: unknown method {method!r}; choose one of {', '.join(DEDUP_METHODS)}")
        self.method = method
        self.column = f"dedup_{method}_keep"
        self.columns = (self.column,)

    def params(self) -> dict:
        return {"method": self.method, "column": self.column}

    def apply(self, table: pa.Table) -> FilterResult:
        keep, missing = _bools(table.column(self.column))
        return FilterResult.from_rules(table.num_rows, {"not_deduplicated": missing, "duplicate": ~missing & ~keep})


class Decontaminated(Filter):
    name = "decontaminated"
    description = ("Drops samples whose image matches an evaluation image (from `curate decontaminate`); rows that "
                   "were not checked (no pHash) are rejected as not_checked.")
    columns = ("contaminated",)

    def apply(self, table: pa.Table) -> FilterResult:
        contaminated, missing = _bools(table.column("contaminated"))
        return FilterResult.from_rules(table.num_rows, {"not_checked": missing, "contaminated": ~missing & contaminated})
