"""What a run trained on, recorded in RUN/info.json (`data_source`) so that `evaluate bundle` can refuse a subset
file the run did not train on.

The first record that applies:

* `subset`: --data is one folder that `curate reshard` (or `curate run`) finished writing, all its shards. Its
  reshard_stats.json names the subset file and the file's sha256; the bundle's subset must have that sha256.
* `uid_multiset`: anything else (several folders, a pattern picking some shards, shards from elsewhere): the
  sha256 of the sorted multiset of uids the shards hold (`uid_multiset_sha256`). A sample's uid comes from its
  key when the key is `{uid}` or `{uid}-{j}` (DataComp's resharder and ours), else from its .json member; only
  tar headers and .json members are read. A subset file's rows hash the same way, so a run trained on exactly a
  subset's samples matches that subset.
* `unverified`: remote shards, or shards with samples whose uid cannot be told (counted): nothing to compare.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np

from curate.subset import sort_pairs
from curate.uids import UID_DTYPE, UID_HEX_CHARS, hex_to_pair, valid_uid_mask
from curate.wds import member_key

RESHARD_STATS = "reshard_stats.json"
RESHARD_UNFINISHED = ".reshard-unfinished"  # curate.reshard.UNFINISHED: the folder is still being written


def uid_multiset_sha256(pairs: np.ndarray) -> str:
    """sha256 of a multiset of uids: the sorted `u8,u8` rows as little-endian bytes (a subset file's rows)."""
    rows = sort_pairs(np.asarray(pairs, dtype=UID_DTYPE)).astype(np.dtype("<u8,<u8"))
    return hashlib.sha256(rows.tobytes()).hexdigest()


def _uid_of_key(key: str) -> str | None:
    """The uid of a `{uid}` or `{uid}-{j}` key (or of a bare uid string), lower-case; None for other keys."""
    uid = key.split("-", 1)[0]
    return uid.lower() if len(uid) == UID_HEX_CHARS and valid_uid_mask([uid])[0] else None


def shard_uids(path: str) -> tuple[list[tuple[int, int]], int]:
    """(uid pairs of the tar's samples, samples whose uid could not be told)."""
    pairs, unknown = [], 0
    current, uid = None, None

    def close():
        nonlocal unknown
        if current is not None:
            if uid is None:
                unknown += 1
            else:
                pairs.append(hex_to_pair(uid))

    with tarfile.open(path, mode="r:") as tar:  # seeks over member data: headers only, except .json members
        for member in tar:
            named = member_key(member.name) if member.isfile() else None
            if named is None:
                continue
            key, ext = named
            if key != current:
                close()
                current, uid = key, _uid_of_key(key)
            if uid is None and ext == "json":
                try:
                    value = json.loads(tar.extractfile(member).read()).get("uid")
                    uid = _uid_of_key(value) if isinstance(value, str) and "-" not in value else None
                except (ValueError, AttributeError, UnicodeDecodeError):
                    uid = None
    close()
    return pairs, unknown


def _from_reshard(data: str, shards: list[str]) -> dict | None:
    """The `subset` record when --data is exactly one finished reshard folder, else None."""
    folder = Path(data.strip())
    stats_path = folder / RESHARD_STATS
    if "::" in data or not folder.is_dir() or not stats_path.is_file() or (folder / RESHARD_UNFINISHED).exists():
        return None
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        sizes = json.loads((folder / "sizes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stats, dict) or not stats.get("subset_sha256") or not isinstance(sizes, dict):
        return None
    if sorted(Path(s).name for s in shards) != sorted(sizes):
        return None  # not the reshard's shards, all of them
    return {"kind": "subset", "subset_sha256": stats["subset_sha256"], "subset_file": stats.get("subset_file"),
            "subset_rows": stats.get("subset_rows"), "samples": stats.get("written"),
            "reshard_stats": str(stats_path.resolve())}


def data_source(data: str, shards: list[str]) -> dict:
    """The record of what `shards` (resolved from --data) hold; see the module docstring."""
    record = _from_reshard(data, shards)
    if record is not None:
        return record
    if any(s.startswith("pipe:") or "://" in s for s in shards):
        return {"kind": "unverified", "reason": "remote shards (their uids are not read before training)"}
    pairs, unknown = [], 0
    for s in shards:
        p, u = shard_uids(s)
        pairs += p
        unknown += u
    arr = np.array(pairs, dtype=UID_DTYPE)
    record = {"kind": "uid_multiset", "uid_multiset_sha256": uid_multiset_sha256(arr), "samples": len(arr)}
    if unknown:
        record.update(kind="unverified", samples_without_uid=unknown,
                      reason=f"{unknown} samples have no uid in their key or .json")
    return record
