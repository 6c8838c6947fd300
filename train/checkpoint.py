"""Checkpoints written whole or not at all, found again by `--resume latest`, loadable by open_clip.

A training checkpoint `RUN/checkpoints/step_XXXXXXXX.pt` holds everything to continue the same run: model
(under "state_dict", so open_clip can load it too), optimiser, grad scaler, step, samples seen, every rank's
RNG states and data position. `final.pt` holds the weights and what they were trained on, nothing else.
`--keep N` deletes all but the newest N training checkpoints, each time after a new one is written whole.
"""

from __future__ import annotations

import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from curate import atomic
from curate.atomic import atomic_open

FORMAT = "datacurate-train-1"
STEP_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(run: str | Path) -> Path:
    return Path(run) / "checkpoints"


def step_path(run: str | Path, step: int) -> Path:
    return checkpoint_dir(run) / f"step_{step:08d}.pt"


def final_path(run: str | Path) -> Path:
    return checkpoint_dir(run) / "final.pt"


def save(obj: dict, path: str | Path) -> None:
    """torch.save through a temporary file renamed into place: a kill leaves the old state, never half a file."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


class CheckpointError(ValueError):
    """A file that is not a checkpoint this trainer can read or resume from; the message names it."""


def load(path: str | Path) -> dict:
    """A checkpoint's contents (tensors on the CPU; no pickled code is run)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for a file it cannot read
        raise CheckpointError(f"{path}: not a readable checkpoint ({_why_unreadable(path, e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict")
    return state


def _why_unreadable(path: Path, error: Exception) -> str:
    """torch's reason in a few words (its messages run to several sentences of advice)."""
    if not zipfile.is_zipfile(path):
        return "truncated, or not the zip archive torch.save writes"
    if isinstance(error, pickle.UnpicklingError):
        return "it holds pickled objects other than tensors and plain values, which are never loaded"
    first = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", str(error).strip()).split(". ")[0]
    return first[:160] or type(error).__name__


def load_for_resume(path: str | Path) -> dict:
    """A training checkpoint of this trainer (not final.pt, not another tool's weights)."""
    state = load(path)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint of this trainer (no format {FORMAT!r}; "
                              "final.pt and other weights hold no optimiser or data position to resume from)")
    return state


def remove_stale_temporaries(run: str | Path) -> list[Path]:
    """The temporaries a killed run left in RUN/ and RUN/checkpoints/ (such as a 0-byte `.step_*.pt.*.tmp`)."""
    return atomic.remove_stale_temporaries(run, checkpoint_dir(run))


def _steps(run: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the run's training checkpoints, by step (temporary leftovers and final.pt never match)."""
    folder = checkpoint_dir(run)
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_NAME.match(p.name)))


def latest(run: str | Path) -> Path | None:
    """The training checkpoint with the highest step."""
    found = _steps(run)
    return found[-1][1] if found else None


def prune(run: str | Path, keep: int, newest: int) -> list[Path]:
    """Delete all but the `keep` newest step checkpoints up to step `newest`, the one just written whole.

    Checkpoints past `newest` (an earlier attempt that went further before an explicit --resume PATH) are left
    alone, so the one just written is never deleted for them. Returns the deleted paths.
    """
    found = [p for s, p in _steps(run) if s <= newest]
    removed = found[:-max(1, keep)]  # the newest is what --resume latest needs
    for path in removed:
        path.unlink()
    return removed


def resolve(run: str | Path, resume: str | None) -> Path | None:
    """What `--resume` names: 'latest' (None if the run has no checkpoint yet) or a checkpoint file."""
    if resume is None:
        return None
    if resume == "latest":
        return latest(run)
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file")
    return path


def rng_state(device: torch.device) -> dict:
    """This process's RNG states, in types torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
