"""The open_clip model, its transforms and tokenizer, the AdamW of open_clip's main, and a FLOP count for MFU."""

from __future__ import annotations

import torch

from .scales import Scale, register_model_configs


def create(model_name: str, device: torch.device, *, grad_checkpointing: bool = False,
           patch_dropout: float | None = None, image_size: int | None = None, aug_cfg: dict | None = None,
           siglip: bool = False):
    """(model, train_preprocess, tokenizer) built by open_clip, in fp32 weights (autocast does mixed precision).

    The options past grad_checkpointing are non-standard: FLIP patch dropout, CLIPA's reduced image size,
    open_clip-style augmentation, and SigLIP's logit scale/bias initialisation (log 10, -10).
    """
    import math

    import open_clip

    register_model_configs()
    extra = {"init_logit_scale": math.log(10), "init_logit_bias": -10.0} if siglip else {}
    model, preprocess_train, _ = open_clip.create_model_and_transforms(
        model_name, pretrained=None, device=device, precision="fp32",
        force_patch_dropout=patch_dropout, force_image_size=image_size, aug_cfg=aug_cfg or {},
        output_dict=True, **extra)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    tokenizer = open_clip.get_tokenizer(model_name)
    return model, preprocess_train, tokenizer


def _no_weight_decay(name: str, p: torch.nn.Parameter) -> bool:
    """open_clip's rule: gains, biases, norms and the logit scale are not decayed."""
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def optimizer(model: torch.nn.Module, scale: Scale, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with DataComp's weight decay, betas and eps, and open_clip's two parameter groups."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if _no_weight_decay(n, p)]
    decay = [p for n, p in named if not _no_weight_decay(n, p)]
    kwargs = {}
    if fused is not None:
        kwargs["fused"] = fused
    return torch.optim.AdamW(
        [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": scale.weight_decay}],
        lr=scale.lr, betas=(scale.beta1, scale.beta2), eps=scale.eps, **kwargs)


def _tower_flops(tokens: int, width: int, layers: int, mlp_ratio: float) -> float:
    """Forward FLOPs of a transformer tower on one sequence: dense matmuls plus attention scores."""
    dense = 2 * tokens * layers * (4 * width * width + 2 * mlp_ratio * width * width)
    attention = 2 * 2 * layers * tokens * tokens * width
    return dense + attention


def train_flops_per_sample(model_name: str, patch_dropout: float = 0.0, image_size: int | None = None) -> float | None:
    """Model FLOPs of one training sample (3x forward; recomputation by checkpointing is not counted).

    None for architectures this estimate does not cover (timm or HF towers).
    """
    import open_clip

    register_model_configs()
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        return None
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    if "timm_model_name" in v or "hf_model_name" in t or isinstance(v.get("layers"), (list, tuple)):
        return None
    size = image_size or v["image_size"]
    size = size if isinstance(size, int) else size[0]
    patches = (size // v["patch_size"]) ** 2
    patches = int(patches * (1 - patch_dropout))
    vision = _tower_flops(patches + 1, v["width"], v["layers"], v.get("mlp_ratio", 4.0))
    vision += 2 * patches * 3 * v["patch_size"] ** 2 * v["width"]  # patch embedding
    text = _tower_flops(t.get("context_length", 77), t["width"], t["layers"], t.get("mlp_ratio", 4.0))
    return 3.0 * (vision + text)


# Dense bf16/fp16 tensor-core peaks (FLOP/s) for the MFU estimate; unknown devices give no MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS.items():
        if key in name:
            return flops
    return None
