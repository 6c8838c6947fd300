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


# ---- what a scale needs: refuse before loading anything what cannot fit ----------------------------------


class ScaleTooLarge(ValueError):
    """A scale whose batch, model and optimiser state cannot fit one process's memory here."""


@dataclasses.dataclass(frozen=True)
class MemoryNeed:
    """A lower bound on one training process's memory: what it must hold at once, activations not counted.

    Counting only these keeps the bound safe to refuse on: a run that fails it would die allocating, as
    `--scale xlarge` on a CPU does (a 54 GB float batch), after minutes of start-up.
    """

    model: str
    params: int
    global_batch: int  # samples in one optimiser step (the budget's, or fewer when --samples is smaller)
    micro_batch: int  # samples in one forward pass of this process
    state_bytes: int  # fp32 weights, gradients and AdamW's two moments
    images_bytes: int  # one micro-batch of images as float32
    logits_bytes: int  # its image and text logits against the global batch (DataComp's local loss)

    @property
    def total(self) -> int:
        return self.state_bytes + self.images_bytes + self.logits_bytes

    def split_to_fit(self, available: int) -> int | None:
        """How many ways the batch must be split (processes x --accum-freq) to fit; None if the state alone does not."""
        room = available - self.state_bytes
        if room <= 0:
            return None
        return max(1, math.ceil((self.images_bytes + self.logits_bytes) / room))


def memory_need(scale: Scale, model: str | None = None, image_size: int | None = None, world_size: int = 1,
                accum_freq: int = 1, batch_size: int | None = None, samples: int | None = None) -> MemoryNeed:
    """The lower bound for a run with these options, from the model built on the meta device (no memory)."""
    import open_clip
    import torch

    from curate.signals.clip import no_random_init_warning

    name = model or scale.model
    register_model_configs()
    with no_random_init_warning(), torch.device("meta"):
        m = open_clip.create_model(name, device="meta", **({"force_image_size": image_size} if image_size else {}))
    params = sum(p.numel() for p in m.parameters())
    size = m.visual.image_size
    pixels = size[0] * size[1] if isinstance(size, (tuple, list)) else size * size
    global_batch = batch_size * accum_freq * world_size if batch_size else scale.global_batch
    global_batch = min(global_batch, samples or scale.samples_seen)
    micro = math.ceil(math.ceil(global_batch / world_size) / accum_freq)
    return MemoryNeed(name, params, global_batch, micro, state_bytes=16 * params, images_bytes=micro * 3 * pixels * 4,
                      logits_bytes=2 * micro * global_batch * 4)


def available_memory(device: str, local_rank: int = 0, local_processes: int = 1) -> tuple[int, str]:
    """(bytes one process may use, what they are): the GPU's memory, or this machine's available RAM shared
    by its processes."""
    if device.startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(local_rank)
        return props.total_memory, f"on the GPU ({props.name})"
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        import os

        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    share = f", shared by {local_processes} processes" if local_processes > 1 else ""
    return avail // max(1, local_processes), f"of RAM available{share}"


def check_fits(scale: Scale, device: str, **options) -> MemoryNeed | None:
    """Raise ScaleTooLarge, saying what the scale needs and how to split it, when the lower bound cannot fit."""
    import os

    try:
        need = memory_need(scale, **options)
    except (RuntimeError, ValueError, KeyError):
        return None  # a model open_clip cannot build: the trainer says so when it builds it
    world = options.get("world_size", 1)
    available, where = available_memory(device, int(os.environ.get("LOCAL_RANK", "0")),
                                        int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if need.total <= available:
        return need
    gb = lambda n: f"{n / 1e9:.1f} GB"  # noqa: E731
    what = (f"scale {scale.name} needs at least {gb(need.total)} in each training process ({need.model}: weights, "
            f"gradients and AdamW state {gb(need.state_bytes)}; a forward pass of {need.micro_batch:,} images as "
            f"float32 {gb(need.images_bytes)}; their logits against the global batch of {need.global_batch:,} "
            f"{gb(need.logits_bytes)}; activations come on top), and there are {gb(available)} {where}")
    split = need.split_to_fit(available)
    if split is None:
        raise ScaleTooLarge(f"{what}: even the model's weights and optimiser state do not fit; use GPUs with more memory")
    raise ScaleTooLarge(f"{what}: split each batch at least {split * world * options.get('accum_freq', 1)} ways, "
                        f"over GPUs (torchrun --nproc_per_node N: each takes 1/N) and micro-batches (--accum-freq K)")
