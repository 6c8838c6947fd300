"""Load an open_clip model once for the whole suite, and encode text without wasting work on padding.

DataComp reloads the model for every task; loading once is the first thing that makes `evaluate` faster.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from curate.signals.clip import encode_text as clip_text_features
from curate.signals.clip import load_checked, model_kwargs, read_checkpoint


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the architecture."""


def register_model_config(path: str | Path) -> str:
    """Make a JSON model config (open_clip's format) loadable by its file stem; returns that name."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model config not found: {path}")
    json.loads(path.read_text())  # fail here, naming the file, if it is not JSON
    open_clip.add_model_config(path)
    return path.stem


PROJECT_MODELS = Path(__file__).resolve().parents[1] / "configs" / "models"


def load_model(arch: str, checkpoint: str | None, device: str = "cpu"):
    """(model, preprocess, tokenizer) for `arch` with weights from a local file or an open_clip pretrained tag."""
    if arch not in open_clip.list_models() and PROJECT_MODELS.is_dir():
        open_clip.add_model_config(PROJECT_MODELS)  # the project's own configs (e.g. datacomp-tiny, which `train` uses)
    if arch not in open_clip.list_models():
        raise CheckpointError(f"unknown architecture {arch!r} (not in open_clip.list_models(); "
                              f"pass --model-config FILE.json for a custom one)")
    local = checkpoint is not None and Path(checkpoint).exists()
    if local:
        sd, options = read_checkpoint(Path(checkpoint), CheckpointError)
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, **model_kwargs(sd, options))
        load_checked(model, sd, checkpoint, arch, CheckpointError)
    else:
        if checkpoint and ("/" in checkpoint or checkpoint.endswith((".pt", ".pth", ".bin", ".safetensors"))):
            raise CheckpointError(f"checkpoint file not found: {checkpoint}")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=checkpoint)
        except RuntimeError as e:
            raise CheckpointError(f"cannot load pretrained {checkpoint!r} for {arch}: {e}") from None
    model = model.to(device).eval()
    return model, preprocess, open_clip.get_tokenizer(arch)


def encode_text(model, tokens: torch.Tensor) -> torch.Tensor:
    """L2-normalised text features, running only the positions up to the batch's last end-of-text token
    (the curate CLIP signal's encoder: one implementation of that shortcut for both)."""
    return F.normalize(clip_text_features(model, tokens), dim=-1)


def encode_texts(model, tokenizer, texts: list[str], batch_size: int, device: str) -> torch.Tensor:
    """Features of many texts, in large batches sorted by length so short prompts are not padded to long ones."""
    tokens = tokenizer(texts)
    lengths = tokens.argmax(dim=-1)
    order = torch.argsort(lengths, stable=True)
    out = None
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            feats = encode_text(model, tokens[idx].to(device)).float()
            if out is None:
                out = torch.empty(len(texts), feats.shape[1], device=device)
            out[idx.to(device)] = feats
    return out
