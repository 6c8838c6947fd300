"""Load an open_clip model once for the whole suite, and encode text without wasting work on padding.

DataComp reloads the model for every task; loading once is the first thing that makes `evaluate` faster.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2

from curate.signals.clip import ClipModelError, create_model
from curate.signals.clip import encode_text as clip_text_features


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
    """(model, preprocess, tokenizer) for `arch` with weights from a local file or an open_clip pretrained tag.

    Loaded as `curate stage` loads its models (curate.signals.clip.create_model): a tag's weights come from the
    local cache without a network, and weights that cannot be had fail at once, naming --checkpoint.
    """
    if arch not in open_clip.list_models() and PROJECT_MODELS.is_dir():
        open_clip.add_model_config(PROJECT_MODELS)  # the project's own configs (e.g. datacomp-tiny, which `train` uses)
    if arch not in open_clip.list_models():
        raise CheckpointError(f"unknown architecture {arch!r} (not in open_clip.list_models(); "
                              f"pass --model-config FILE.json for a custom one)")
    if checkpoint is None:
        model = open_clip.create_model(arch, pretrained=None)  # random weights, and open_clip says so
    else:
        try:
            model = create_model(arch, checkpoint, flag="--checkpoint", error=CheckpointError)
        except ClipModelError as e:  # weights that cannot be had, or a pretrained tag open_clip does not know
            raise CheckpointError(str(e)) from None
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
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
