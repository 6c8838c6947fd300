"""DataComp's training scales, read from `configs/scales.yaml` so the numbers live in one reviewed place."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCALES_YAML = CONFIGS / "scales.yaml"
MODELS_DIR = CONFIGS / "models"

PRECISIONS = ("amp", "amp_bf16", "fp32")


class UnknownScale(KeyError):
    """A scale name that configs/scales.yaml does not define."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


@dataclasses.dataclass(frozen=True)
class Scale:
    """One row of DataComp's scales table: what is trained, on how many samples, with which optimiser."""

    name: str
    samples_seen: int
    model: str
    global_batch: int
    lr: float
    warmup: int
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    precision: str
    grad_checkpointing: bool

    @property
    def steps(self) -> int:
        """Optimiser steps: the last one is trimmed so exactly `samples_seen` samples are seen."""
        return math.ceil(self.samples_seen / self.global_batch)

    def replace(self, **changes) -> "Scale":
        return dataclasses.replace(self, **changes)


def load_scales(path: str | Path = SCALES_YAML) -> dict[str, Scale]:
    """All scales of the YAML file, by name, checked for missing or unknown fields."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    fields = {f.name for f in dataclasses.fields(Scale)} - {"name"}
    scales = {}
    for name, row in raw.items():
        missing, extra = fields - set(row), set(row) - fields
        if missing or extra:
            raise ValueError(f"scale {name!r} in {path}: missing {sorted(missing)}, unknown {sorted(extra)}")
        if row["precision"] not in PRECISIONS:
            raise ValueError(f"scale {name!r}: precision must be one of {PRECISIONS}")
        scales[name] = Scale(
            name=name,
            samples_seen=int(row["samples_seen"]),
            model=str(row["model"]),
            global_batch=int(row["global_batch"]),
            lr=float(row["lr"]),
            warmup=int(row["warmup"]),
            weight_decay=float(row["weight_decay"]),
            beta1=float(row["beta1"]),
            beta2=float(row["beta2"]),
            eps=float(row["eps"]),
            precision=str(row["precision"]),
            grad_checkpointing=bool(row["grad_checkpointing"]),
        )
    return scales


def get_scale(name: str, path: str | Path = SCALES_YAML) -> Scale:
    """The named scale; an unknown name raises UnknownScale listing the known ones."""
    scales = load_scales(path)
    if name not in scales:
        raise UnknownScale(f"unknown scale {name!r}; known scales: {', '.join(scales)}")
    return scales[name]


_registered = False


def register_model_configs() -> None:
    """Make the project's model configs (configs/models/*.json, e.g. datacomp-tiny) known to open_clip."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(MODELS_DIR)
        _registered = True
