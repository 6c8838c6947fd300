"""What a run folder says about how its model was trained, for the leaderboard: its name, scale, the options
beyond DataComp's protocol (non-standard) and how many samples its data held (the subset size).

A run is the folder `evaluate` wrote eval_results.jsonl into; it is usually also the `train` folder. Where
it is not, eval_model.json names the evaluated checkpoint, and the train folder is the one above its
`checkpoints/`. Every field is read defensively: info.json may be train's (`non_standard`, `data`), a
user's own ({"name", "scale", "subset_size"}), or carry the trainer's record of its data (`data_source`:
{"kind", "samples", ...}, train.provenance); the first source that gives a value wins, then the data folder's
sizes.json / reshard_stats.json, then the run's subset.npy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: sizes written by earlier or later trainers and by users, in the order they are trusted
SIZE_KEYS = ("subset_size", "num_samples", "n_samples")
DATA_SIZE_KEYS = ("subset_size", "samples_in_data", "samples")
#: train's record of what it read (train.provenance: `data_source.samples`), then a `data` object if one appears
RECORD_FIELDS = ("data_source", "data")
DATA_PATH_KEYS = ("path", "shards", "dir")


class RunInfoError(ValueError):
    """A run's info.json or eval_model.json is not JSON we can read."""


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunInfoError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise RunInfoError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def evaluated_checkpoint(run: Path) -> Path | None:
    """The checkpoint `evaluate` recorded in RUN/eval_model.json, if any."""
    rec = _read_json(run / "eval_model.json") or {}
    ckpt = rec.get("checkpoint")
    return Path(ckpt) if isinstance(ckpt, str) and ckpt else None


def train_folder(run: Path) -> tuple[Path | None, dict]:
    """(the folder whose info.json describes the run's training, that info.json) or (None, {})."""
    if (info := _read_json(run / "info.json")) is not None:
        return run, info
    ckpt = evaluated_checkpoint(run)
    if ckpt is not None:
        folder = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        if (info := _read_json(folder / "info.json")) is not None:
            return folder, info
    return None, {}


def checkpoint_options(path: Path) -> dict | None:
    """The non-standard options train records in a checkpoint (None: unreadable or not ours). Memory-mapped,
    so a large checkpoint's weights are not read."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - torch raises several types for a foreign or corrupt file
        return None
    opts = obj.get("options") if isinstance(obj, dict) else None
    return opts if isinstance(opts, dict) else None


def _data_folder(data, bases: list[Path]) -> Path | None:
    """The local folder of the shards a run read (train's --data: a folder, a tar, or a brace pattern)."""
    if isinstance(data, dict):
        data = next((data[k] for k in DATA_PATH_KEYS if isinstance(data.get(k), str)), None)
    if not isinstance(data, str) or "://" in data or not data:
        return None
    if "{" in data:  # a brace pattern: the folder before it
        head = data[: data.index("{")]
        p = Path(head) if head.endswith("/") else Path(head).parent
    else:
        p = Path(data).parent if data.endswith(".tar") else Path(data)
    for base in ([Path()] if p.is_absolute() else [Path(), *bases]):
        if (base / p).is_dir():
            return base / p
    return None


def _count(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def subset_size(run: Path, train_dir: Path | None, info: dict) -> tuple[int | None, str | None]:
    """(samples the run's data held, where that number came from)."""
    for k in SIZE_KEYS:
        if (n := _count(info.get(k))) is not None:
            return n, f"info.json {k}"
    for field in RECORD_FIELDS:
        if isinstance(record := info.get(field), dict):
            for k in DATA_SIZE_KEYS:
                if (n := _count(record.get(k))) is not None:
                    return n, f"info.json {field}.{k}"
    data = info.get("data")
    folder = _data_folder(data, [d for d in (train_dir, run) if d is not None])
    if folder is not None:
        sizes = _json_or_none(folder / "sizes.json")
        if isinstance(sizes, dict) and sizes and all(_count(v) is not None for v in sizes.values()):
            return int(sum(sizes.values())), f"{folder / 'sizes.json'}"
        stats = _json_or_none(folder / "reshard_stats.json")
        if isinstance(stats, dict) and (n := _count(stats.get("written"))) is not None:
            return n, f"{folder / 'reshard_stats.json'}"
    for d in (run, train_dir):
        if d is not None and (d / "subset.npy").is_file():
            try:
                return int(np.load(d / "subset.npy", mmap_mode="r").shape[0]), f"{d / 'subset.npy'}"
            except (OSError, ValueError):
                continue
    return None, None


def _json_or_none(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def run_info(run: Path) -> dict:
    """name, scale, non_standard (options; None when nothing records them), subset_size and its source."""
    run = Path(run)
    train_dir, info = train_folder(run)
    non_standard = info.get("non_standard") if isinstance(info.get("non_standard"), dict) else None
    if non_standard is None and "non_standard" not in info:
        ckpt = evaluated_checkpoint(run)
        if ckpt is not None and ckpt.is_file():
            non_standard = checkpoint_options(ckpt)
    size, source = subset_size(run, train_dir, info)
    name = info.get("name") if isinstance(info.get("name"), str) and run == train_dir else None
    scale = info.get("scale") if isinstance(info.get("scale"), str) else None
    return {"name": name or run.name, "scale": scale, "non_standard": non_standard or {},
            "subset_size": size, "subset_size_source": source}
