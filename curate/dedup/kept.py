"""Which copy of a duplicate group was kept: for a few uids that `curate dedup` marked as not kept, the uid
its group kept instead (the report shows it next to a rejected duplicate, so a user can judge the match).

Reads `POOL/columns/dedup_<method>/` twice with pushed-down filters (the rejected uids' groups, then those
groups' kept rows), so it never loads the pool's groups into memory.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from curate import storage
from curate.columns import store_files
from curate.dedup.names import column_names


def kept_copies(pool_root: str | Path, method: str, uids: list[str]) -> dict[str, str | None]:
    """uid -> the uid its dedup group kept (None: the uid has no group, or its group kept no row)."""
    files = store_files(pool_root, f"dedup_{method}")
    if not uids or not files:
        return {}
    gcol, kcol = column_names(method)
    data = storage.dataset(files)
    mine = data.to_table(columns=["uid", gcol], filter=pc.is_in(ds.field("uid"), value_set=pa.array(uids, pa.string())))
    group_of = {u: g for u, g in zip(mine.column("uid").to_pylist(), mine.column(gcol).to_pylist()) if g is not None}
    groups = pa.array(sorted(set(group_of.values())), pa.int64())
    kept = data.to_table(columns=["uid", gcol], filter=pc.is_in(ds.field(gcol), value_set=groups) & (ds.field(kcol) == True))
    keeper = dict(zip(kept.column(gcol).to_pylist(), kept.column("uid").to_pylist()))
    return {u: keeper.get(group_of.get(u)) for u in uids}
