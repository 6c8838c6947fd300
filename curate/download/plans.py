"""Which rows go into which shards, kept on disk so that any rerun continues the same download.

A pool's download is a sequence of *plans*, each a parquet file of rows under `POOL/_download/plans/`,
listed in `POOL/_download/plans.json`. A plan of n rows owns ceil(n / shard_size) consecutive shard ids,
after the previous plan's. img2dataset's Reader cuts each plan into those shards, skipping the finished
ones, so a killed download resumes where it stopped. A rerun with a URL list that gained rows adds a plan
with exactly the new rows (new shards; finished shards are never rewritten); `--retry-failed` adds a
plan with the rows to fetch again. A rerun with a list that lost rows the pool already planned is refused:
the pool's shards would no longer match its metadata.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import atomic_path, write_json

LIST = "list"  # rows of the URL list, fetched for the first time
RETRY = "retry"  # rows fetched again by --retry-failed


class PlanError(ValueError):
    """A rerun that cannot continue this pool's download."""


@dataclass
class Plan:
    file: str
    kind: str
    rows: int
    first_shard: int
    shards: int
    reasons: list[str] = field(default_factory=list)  # for a retry plan: which failures it fetches again

    @property
    def shard_ids(self) -> range:
        return range(self.first_shard, self.first_shard + self.shards)

    def shard_rows(self, shard_id: int, shard_size: int) -> tuple[int, int]:
        """(first row in the plan, row count) of one of this plan's shards, as img2dataset's Reader cuts them."""
        first = (shard_id - self.first_shard) * shard_size
        return first, min(shard_size, self.rows - first)


@dataclass
class Plans:
    """The manifest: shard size (fixed for a pool: it decides shard ids and keys) and the plans in order."""

    root: Path
    shard_size: int
    plans: list[Plan]

    @property
    def folder(self) -> Path:
        return self.root / "plans"

    @property
    def next_shard(self) -> int:
        return self.plans[-1].first_shard + self.plans[-1].shards if self.plans else 0

    def path(self, plan: Plan) -> Path:
        return self.folder / plan.file

    def planned_uids(self, kind: str | None = None) -> pa.Array:
        arrays = [storage.read_parquet(self.path(p), columns=["uid"]).column("uid").combine_chunks()
                  for p in self.plans if kind is None or p.kind == kind]
        return pa.concat_arrays(arrays) if arrays else pa.array([], pa.string())

    def add(self, rows: pa.Table, kind: str, reasons: list[str] | None = None) -> Plan:
        """Write `rows` as the next plan: the parquet first, then the manifest that names it (both atomic)."""
        plan = Plan(file=f"{len(self.plans):08d}.parquet", kind=kind, rows=rows.num_rows, first_shard=self.next_shard,
                    shards=math.ceil(rows.num_rows / self.shard_size), reasons=list(reasons or []))
        with atomic_path(self.path(plan)) as tmp:
            pq.write_table(rows, tmp, row_group_size=self.shard_size)  # a shard reads only its own group
        self.plans.append(plan)
        self.save()
        return plan

    def save(self) -> None:
        write_json(self.root / "plans.json", {"shard_size": self.shard_size, "plans": [asdict(p) for p in self.plans]})


def load(root: Path, shard_size: int) -> Plans:
    """This pool's plans, or none yet. A pool's shard size is the one it started with.
    `root` is a Path, or a UPath for a pool in an object store."""
    manifest = root / "plans.json"
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
            plans = [Plan(**p) for p in data["plans"]]
            return Plans(root, int(data["shard_size"]), plans)
        except (ValueError, KeyError, TypeError) as e:
            raise PlanError(f"{manifest}: unreadable download plan ({e}); remove {root} to start the download over") from e
    plans = Plans(root, shard_size, [])
    legacy = root / "input.parquet"  # pools downloaded before plans existed: one plan, shard ids from 0
    if legacy.exists():
        rows = storage.read_parquet(legacy)
        plans.folder.mkdir(parents=True, exist_ok=True)
        plans.add(rows, LIST)
        legacy.unlink()
    return plans


def extend_with_list(plans: Plans, accepted: pa.Table, url_list: str) -> Plan | None:
    """Plan the accepted rows not planned yet (None when there are none); refuse a list that lost planned rows."""
    planned = plans.planned_uids(LIST)
    uids = accepted.column("uid").combine_chunks()
    lost = pc.invert(pc.is_in(planned, value_set=uids))
    n_lost = pc.sum(lost).as_py() or 0
    if n_lost:
        example = planned.filter(lost)[0].as_py()
        raise PlanError(
            f"{url_list}: {n_lost} row(s) this pool already planned or fetched are not in the URL list any more "
            f"(e.g. uid {example}); rerun with the original list (new rows are fetched into new shards) or use "
            "a new --pool")
    new = accepted.filter(pc.invert(pc.is_in(uids, value_set=planned)))
    if new.num_rows == 0:
        return None
    plans.folder.mkdir(parents=True, exist_ok=True)
    return plans.add(new, LIST)
