"""What a run tells the user: a JSONL line per step, RUN/info.json, and the versions that produced them."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

from curate.atomic import atomic_open, write_json


def versions() -> dict:
    import numpy
    import open_clip
    import torch
    import webdataset

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "webdataset": getattr(webdataset, "__version__", None),
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
    }


def write_info(run: str | Path, info: dict) -> None:
    write_json(Path(run) / "info.json", info)


def read_info(run: str | Path) -> dict:
    with open(Path(run) / "info.json", encoding="utf-8") as f:
        return json.load(f)


def _clean(value):
    """JSON has no NaN/inf: write them as null so every line parses with any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class StepLog:
    """Appends one JSON object per line to RUN/log.jsonl.

    A line is appended and flushed per record, so a killed run loses at most its last line. On resume the
    file is first rewritten (atomically) without the records past the checkpoint, so the resumed run's
    lines follow on without duplicates.
    """

    def __init__(self, run: str | Path, resume_step: int | None = None):
        self.path = Path(run) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # the torn last line of a killed run
                    continue
                # a finished run's "end" (the one record without a step) goes too: the resumed run writes its own
                if record.get("event") != "end" and record.get("step", 0) <= resume_step:
                    kept.append(line)
            with atomic_open(self.path, "w") as f:
                f.write("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            with atomic_open(self.path, "w"):
                pass
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(_clean(record), sort_keys=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_log(run: str | Path) -> list[dict]:
    path = Path(run) / "log.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def command_line() -> list[str]:
    return list(sys.argv)
