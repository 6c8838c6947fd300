"""The `clip` signal: image and text embeddings of any open_clip model, and their cosine similarity.

A model is named by open_clip architecture plus a pretrained tag (`openai`, `laion2b_s34b_b79k`, ...:
open_clip's own loading code fetches or reuses the weights) or a local checkpoint path (read here with
`torch.load(weights_only=True)`; a bare state dict, `{"state_dict": ...}` as open_clip and our trainer
save it, `module.` prefixes from DDP all work).

Columns take DataComp's names for OpenAI's ViT-B-32 and ViT-L-14 (tags `b32`, `l14`:
`clip_b32_similarity_score`, `b32_img`, `b32_txt`), so every DataComp filter runs on them. Any other
model gets a tag sanitised from model and pretrained (`clip_<tag>_similarity_score`, `<tag>_img`,
`<tag>_txt`). Embeddings are stored L2-normalised as float16; the score is the cosine of the float32
features, as DataComp computed it.

Split of the work: the CPU side (preprocess transform, tokenizer) is built from plain data (the
preprocess config and the model name), so loader worker processes can build it without the weights;
the model lives in one process and encodes batches (`launch`). The decoded image is converted to RGB
*before* open_clip's evaluation transform (resize, crop, normalise), so palette and 1-bit images are
resized as colour images, not with the NEAREST filter Pillow uses for "P" and "1".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: OpenAI's models, whose columns DataComp's metadata names (tag -> model)
DATACOMP_TAGS = {("ViT-B-32", "openai"): "b32", ("ViT-L-14", "openai"): "l14"}
#: the project's own open_clip configs (datacomp-tiny, ...)
PROJECT_MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"
PRECISIONS = ("fp32", "fp16", "bf16")


class ClipModelError(ValueError):
    """An unknown architecture, a checkpoint that does not load or fit, or weights that cannot be had."""


def sanitize_tag(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def clip_tag(model: str, pretrained: str | None) -> str:
    """`b32`/`l14` for OpenAI's ViT-B-32/ViT-L-14, else a sanitised `<model>_<pretrained>`.

    A checkpoint path contributes its file stem (`/ckpt/epoch_5.pt` -> `epoch_5`).
    """
    if (model, pretrained) in DATACOMP_TAGS:
        return DATACOMP_TAGS[(model, pretrained)]
    if not pretrained:
        raise ClipModelError(f"clip model {model!r} needs --pretrained (a tag such as 'openai' or a checkpoint path)")
    pre = Path(pretrained).stem if _looks_like_path(pretrained) else pretrained
    tag = sanitize_tag(f"{model}_{pre}")
    if not tag:
        raise ClipModelError(f"cannot make a column tag from model {model!r} and pretrained {pretrained!r}; pass a tag")
    return tag


def _looks_like_path(pretrained: str) -> bool:
    return ("/" in pretrained or "\\" in pretrained or Path(pretrained).exists()
            or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")))


@dataclass(frozen=True)
class ClipSpec:
    """One clip model of a stage run: architecture, pretrained tag or checkpoint path, column tag."""

    model: str
    pretrained: str | None
    tag: str | None = None  # None: derived by clip_tag
    model_config: str | None = None  # an extra open_clip JSON config to register (custom architectures)

    @property
    def column_tag(self) -> str:
        return sanitize_tag(self.tag) if self.tag else clip_tag(self.model, self.pretrained)

    @property
    def folder(self) -> str:
        return f"clip_{self.column_tag}"

    @property
    def score_column(self) -> str:
        return f"clip_{self.column_tag}_similarity_score"

    @property
    def img_column(self) -> str:
        return f"{self.column_tag}_img"

    @property
    def txt_column(self) -> str:
        return f"{self.column_tag}_txt"

    @property
    def columns(self) -> tuple[str, str, str]:
        return (self.score_column, self.img_column, self.txt_column)


def register_configs(spec: ClipSpec | None = None) -> None:
    """Make the project's model configs, and the spec's own, known to open_clip (in this process)."""
    _register(str(PROJECT_MODEL_CONFIGS))
    if spec is not None and spec.model_config:
        _register(str(Path(spec.model_config).resolve()))


@lru_cache(maxsize=None)
def _register(path: str) -> None:
    import open_clip

    p = Path(path)
    if not p.exists():
        if p == PROJECT_MODEL_CONFIGS:
            return
        raise ClipModelError(f"model config not found: {path}")
    if p.is_file():
        try:
            json.loads(p.read_text())
        except ValueError as e:
            raise ClipModelError(f"{path}: not a JSON model config ({e})") from None
    open_clip.add_model_config(p)


def model_config(spec: ClipSpec) -> dict | None:
    import open_clip

    register_configs(spec)
    return open_clip.get_model_config(spec.model)


def tokenizer_key(spec: ClipSpec) -> str:
    """Models whose tokenization is identical share one key (and one tokenization per caption)."""
    cfg = model_config(spec) or {}
    text_cfg = cfg.get("text_cfg", {})
    if not text_cfg.get("hf_tokenizer_name") and not text_cfg.get("tokenizer_kwargs"):
        return f"simple:{text_cfg.get('context_length', 77)}"
    return f"model:{spec.model}"


def preprocess_key(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True, default=list)


# ---- the CPU side: built from plain data in any process ------------------------------------------------

_TRANSFORMS: dict[str, object] = {}
_TOKENIZERS: dict[str, object] = {}


def get_transform(cfg: dict):
    """open_clip's evaluation transform for a preprocess config (cached per process)."""
    key = preprocess_key(cfg)
    if key not in _TRANSFORMS:
        from open_clip.transform import PreprocessCfg, image_transform_v2

        _TRANSFORMS[key] = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    return _TRANSFORMS[key]


def get_tokenizer(spec: ClipSpec):
    key = tokenizer_key(spec)
    if key not in _TOKENIZERS:
        import open_clip

        register_configs(spec)
        _TOKENIZERS[key] = open_clip.get_tokenizer(spec.model)
    return _TOKENIZERS[key]


# ---- the model side -----------------------------------------------------------------------------------


@dataclass
class LoadedClip:
    spec: ClipSpec
    model: object  # open_clip model, eval mode, on `device`
    preprocess_cfg: dict
    device: str
    precision: str
    embed_dim: int | None  # width of the image and text features


def read_checkpoint(path: Path, error: type[Exception] = ClipModelError) -> tuple[dict, dict]:
    """(state dict, the trainer's recorded non-standard options or {}) of a local checkpoint: open_clip's
    {"state_dict": ...} layout, ours, a bare state dict, or one saved from DistributedDataParallel."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or foreign file
        raise error(f"cannot read checkpoint {path}: {e}") from None
    options = obj.get("options") if isinstance(obj, dict) else None
    options = options if isinstance(options, dict) else {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise error(f"{path} holds no state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, options


def model_kwargs(sd: dict, options: dict) -> dict:
    """What open_clip must be told to build the trained shape: a SigLIP bias, a reduced (CLIPA) image size."""
    kwargs = {}
    if "logit_bias" in sd:
        kwargs["init_logit_bias"] = 0.0  # any value: the checkpoint's replaces it
    size = options.get("image_size")
    if isinstance(size, int) and size > 0:
        kwargs["force_image_size"] = size
    return kwargs


def load_checked(model, sd: dict, path, arch: str, error: type[Exception] = ClipModelError) -> None:
    """Load strictly, or raise naming the missing and unexpected keys and the shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise error(f"checkpoint {path} does not match architecture {arch}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def load_clip(spec: ClipSpec, device: str = "cpu", precision: str = "fp32") -> LoadedClip:
    """Load the model once per process (cached by spec, device and precision)."""
    return _load_clip_cached(spec, device, precision)


@lru_cache(maxsize=8)
def _load_clip_cached(spec: ClipSpec, device: str, precision: str) -> LoadedClip:
    import open_clip
    import torch

    if precision not in PRECISIONS:
        raise ClipModelError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClipModelError("--device cuda asked for, but torch sees no CUDA device (use --device cpu)")
    register_configs(spec)
    if not spec.model.startswith(("hf-hub:", "local-dir:")) and spec.model not in open_clip.list_models():
        raise ClipModelError(f"unknown open_clip architecture {spec.model!r} (pass a JSON config with --model-config)")
    pre = spec.pretrained
    if not pre:
        raise ClipModelError(f"clip model {spec.model!r} needs --pretrained (a tag such as 'openai' or a checkpoint path)")
    if Path(pre).is_file():
        sd, options = read_checkpoint(Path(pre))
        model = open_clip.create_model(spec.model, pretrained=None, **model_kwargs(sd, options))
        load_checked(model, sd, pre, spec.model)
    else:
        if _looks_like_path(pre) and not Path(pre).is_dir():
            raise ClipModelError(f"checkpoint file not found: {pre}")
        try:  # open_clip's own loading: a pretrained tag (downloaded or from its cache) or a checkpoint folder
            model = open_clip.create_model(spec.model, pretrained=pre)
        except Exception as e:
            raise ClipModelError(f"cannot load pretrained {pre!r} for {spec.model}: {type(e).__name__}: {e}") from None
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = dict(model.visual.preprocess_cfg)
    with torch.inference_mode():  # the embedding width, whatever the tower: encode one caption
        embed_dim = int(launch(LoadedClip(spec, model, cfg, device, "fp32", None), None,
                               get_tokenizer(spec)(["a"]))[1].shape[1])
    return LoadedClip(spec, model, cfg, device, precision, embed_dim)


def _autocast(device: str, precision: str):
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def _can_truncate(model) -> bool:
    """Text features depend only on tokens up to EOT: open_clip's CLIP text tower (causal mask, argmax pool)."""
    import open_clip

    return (type(model) is open_clip.CLIP and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", None) == "argmax")


def encode_text(model, tokens):
    """Unnormalised text features; for causal towers only the positions up to the batch's last EOT are run.

    Padding after EOT cannot change the EOT feature under a causal mask, so this equals
    `model.encode_text(tokens)` to float rounding, at a fraction of the cost (captions are ~15 of 77 tokens).
    """
    import torch

    if not _can_truncate(model) or tokens.shape[0] == 0:
        return model.encode_text(tokens)
    n = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def launch(loaded: LoadedClip, images, tokens):
    """Start encoding (asynchronously on a GPU): L2-normalised float32 features, still on the device."""
    import torch
    import torch.nn.functional as F

    dev = loaded.device
    with torch.inference_mode(), _autocast(dev, loaded.precision):
        img = txt = None
        if images is not None and images.shape[0]:
            img = F.normalize(loaded.model.encode_image(images.to(dev, non_blocking=True)).float(), dim=-1)
        if tokens is not None and tokens.shape[0]:
            txt = F.normalize(encode_text(loaded.model, tokens.to(dev, non_blocking=True)).float(), dim=-1)
    return img, txt


def to_numpy(t) -> np.ndarray | None:
    return None if t is None else t.detach().to("cpu").numpy()


__all__ = ["ClipModelError", "ClipSpec", "DATACOMP_TAGS", "LoadedClip", "clip_tag", "encode_text", "get_tokenizer",
           "get_transform", "launch", "load_clip", "preprocess_key", "tokenizer_key"]
