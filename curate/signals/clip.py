"""The `clip` signal: image and text embeddings of any open_clip model, and their cosine similarity.

A model is named by open_clip architecture plus a pretrained tag (`openai`, `laion2b_s34b_b79k`, ...:
read from the Hugging Face cache when there, without a network; downloaded by open_clip only when its host
answers, else one line says what was looked for where) or a local checkpoint path (read here with
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
import os
import re
from contextlib import contextmanager
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


class WeightsNotFound(ClipModelError):
    """A pretrained tag whose weights are not on this machine and cannot be downloaded now.

    Keeps its parts so a command can name its own option for a local file (`message(flag)`); built from its
    args alone, so it crosses process boundaries intact.
    """

    def __init__(self, arch: str, tag: str, looked: str, why: str, flag: str = "--pretrained PATH"):
        super().__init__(arch, tag, looked, why, flag)
        self.arch, self.tag, self.looked, self.why, self.flag = arch, tag, looked, why, flag

    def message(self, flag: str) -> str:
        return (f"no local copy of the {self.arch} {self.tag!r} weights (looked for {self.looked}) and {self.why}; "
                f"give a local checkpoint file with {flag}")

    def __str__(self) -> str:
        return self.message(self.flag)


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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"cannot read checkpoint {path}: {first}") from None  # torch's own messages run many lines
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
    if not spec.pretrained:
        raise ClipModelError(f"clip model {spec.model!r} needs --pretrained (a tag such as 'openai' or a checkpoint path)")
    model = create_model(spec.model, spec.pretrained)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = dict(model.visual.preprocess_cfg)
    with torch.inference_mode():  # the embedding width, whatever the tower: encode one caption
        embed_dim = int(launch(LoadedClip(spec, model, cfg, device, "fp32", None), None,
                               get_tokenizer(spec)(["a"]))[1].shape[1])
    return LoadedClip(spec, model, cfg, device, precision, embed_dim)


# ---- weights: a local checkpoint, or a pretrained tag read from the local cache before any network --------


def create_model(arch: str, pretrained: str, flag: str = "--pretrained", error: type[Exception] = ClipModelError):
    """open_clip model `arch` (registered) with weights from a local checkpoint file or a pretrained tag.

    Shared by `curate stage`, `curate filters targets` and `evaluate` so all three load the same way. A tag
    whose weights are in the local cache is loaded from there without touching the network; one that is not
    is downloaded only when its host answers, otherwise this fails at once with one line naming the weights,
    where they were looked for and `flag` (the option that takes a local file) instead of retrying for minutes.
    """
    import open_clip

    path = Path(pretrained)
    if path.is_file():
        sd, options = read_checkpoint(path, error)
        with no_random_init_warning():  # the weights are loaded right below
            model = open_clip.create_model(arch, pretrained=None, **model_kwargs(sd, options))
        load_checked(model, sd, pretrained, arch, error)
        return model
    if _looks_like_path(pretrained) and not path.is_dir():
        raise error(f"checkpoint file not found: {pretrained}")
    if path.is_dir() or arch.startswith(("hf-hub:", "local-dir:")):
        try:  # open_clip's own loading (a schema in the model name, a checkpoint folder)
            return open_clip.create_model(arch, pretrained=pretrained)
        except Exception as e:
            raise error(f"cannot load pretrained {pretrained!r} for {arch}: {type(e).__name__}: {e}") from None
    return _from_tag(arch, pretrained, flag, error)


def _from_tag(arch: str, tag: str, flag: str, error: type[Exception]):
    import open_clip
    from open_clip.transform import merge_preprocess_dict

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise error(f"{tag!r} is neither a checkpoint file nor a pretrained tag of {arch} "
                    f"({'its tags: ' + ', '.join(tags) if tags else 'it has no pretrained tags'}); "
                    f"give a local checkpoint with {flag} PATH")
    # OpenAI's models were trained with QuickGELU; open_clip 3 only warns when a tag's activation differs
    # from the architecture's config, so ask for it, or `openai` weights would run with the wrong activation.
    kwargs = {"force_quick_gelu": True} if cfg.get("quick_gelu") else {}
    local, looked = cached_weights(cfg)
    if local is not None and _weight_files(cfg) is None:  # open_clip's URL cache: it checks the hash, no download
        return open_clip.create_model(arch, pretrained=tag, **kwargs)
    if local is not None:
        # the tag's preprocessing, as open_clip applies it for a tag (size comes from the model)
        pre = {k: v for k, v in merge_preprocess_dict({}, cfg).items() if k != "size"}
        try:
            return open_clip.create_model(arch, pretrained=local, force_preprocess_cfg=pre, **kwargs)
        except Exception as e:
            raise error(f"cannot load the cached {arch} {tag!r} weights {local}: {type(e).__name__}: {e}") from None
    why = download_blocked(cfg)
    if why:
        raise WeightsNotFound(arch, tag, looked, why, f"{flag} PATH")
    try:
        return open_clip.create_model(arch, pretrained=tag, **kwargs)
    except Exception as e:
        raise error(f"cannot download the {arch} {tag!r} weights ({looked}): {type(e).__name__}: {e}; "
                    f"give a local checkpoint file with {flag} PATH") from None


def _weight_files(cfg: dict) -> tuple[str, list[str]] | None:
    """(hub repo, file names in open_clip's order of preference) of a tag stored on the Hugging Face hub."""
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    hub = cfg.get("hf_hub")
    if not hub:
        return None
    repo, name = os.path.split(hub)  # 'org/model/' names the default file, 'org/model/file.bin' its own
    name = name or HF_WEIGHTS_NAME
    names = [HF_SAFE_WEIGHTS_NAME] if name == HF_WEIGHTS_NAME else (
        [name[:-4] + ".safetensors"] if name.endswith((".bin", ".pth")) else [])
    return repo, names + [name]


def cached_weights(cfg: dict) -> tuple[str | None, str]:
    """(the local file open_clip would load for a pretrained tag, or None; what was looked for, and where)."""
    hub = _weight_files(cfg)
    if hub is not None:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, names = hub
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str) and os.path.isfile(found):
                return found, ""
        return None, f"{repo}/{{{','.join(names)}}} in the Hugging Face cache {constants.HF_HUB_CACHE}"
    url = cfg.get("url", "")
    target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    if url and target.is_file():
        return str(target), ""
    return None, f"{target.name} in {target.parent}"


def download_blocked(cfg: dict, timeout: float = 5.0) -> str | None:
    """Why the tag's weights cannot be downloaded now (offline mode, a host that does not answer), else None.

    One connection attempt, bounded in time, replaces the hub client's retries (about a minute per file).
    """
    import socket
    import threading
    import urllib.request
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if _weight_files(cfg) is not None:
        if constants.HF_HUB_OFFLINE:
            return "HF_HUB_OFFLINE is set"
        url = constants.ENDPOINT
    else:
        url = cfg.get("url", "")
        if not url:
            return "the tag names no download"
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    target = urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else parts
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    result: list[str | None] = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(f"{host}:{port} cannot be reached ({e.strerror or e})")

    t = threading.Thread(target=connect, daemon=True)  # name resolution has no timeout of its own
    t.start()
    t.join(timeout * 2)
    return result[0] if result else f"{host}:{port} did not answer within {timeout * 2:.0f} s"


class _RandomInitFilter:
    """Drops open_clip's 'No pretrained weights loaded ... initialized randomly' record: we load them next."""

    @staticmethod
    def filter(record) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextmanager
def no_random_init_warning():
    """Silence open_clip's random-init warning for a model whose weights are loaded (or not needed) next."""
    import logging

    root = logging.getLogger()  # open_clip logs through the root logger
    root.addFilter(_RandomInitFilter)
    try:
        yield
    finally:
        root.removeFilter(_RandomInitFilter)


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


__all__ = ["ClipModelError", "ClipSpec", "DATACOMP_TAGS", "LoadedClip", "WeightsNotFound", "clip_tag", "create_model",
           "encode_text", "get_tokenizer", "get_transform", "launch", "load_clip", "preprocess_key", "tokenizer_key"]
