"""`curate filters`: what each filter does, reads and takes; and the ImageNet targets image_based needs."""

from __future__ import annotations

import inspect

NAME = "filters"
ORDER = 50
HELP = "list the filters and what they need"
DESCRIPTION = ("`curate filters [list]` lists the registered filters, what each keeps, the columns or signals it reads and "
               "its parameters; `curate filters targets --output FILE.npy` writes ImageNet class-prompt text embeddings "
               "for image_based (targets_kind: text).")


def add_arguments(p) -> None:
    p.add_argument("action", nargs="?", default="list", choices=["list", "targets"], help="list (default) or targets")
    g = p.add_argument_group("targets (ImageNet class-prompt text embeddings for image_based, targets_kind: text)")
    g.add_argument("--output", default=None, help="where to write the .npy (1000 rows, L2-normalised)")
    g.add_argument("--model", default="ViT-L-14", help="open_clip model name (the pool's l14_img come from OpenAI ViT-L-14)")
    g.add_argument("--pretrained", default="openai", help="open_clip pretrained tag or checkpoint path")
    g.add_argument("--model-config", default=None, metavar="FILE.json", help="an extra open_clip model config")
    g.add_argument("--templates", choices=["openai", "simple"], default="openai", help="OpenAI's 80 templates, or open_clip's 2")
    g.add_argument("--device", default="cpu")
    g.add_argument("--batch-size", type=int, default=256)


def _params(cls) -> str:
    from filters.registry import filter_parameters

    out = []
    for name, default in filter_parameters(cls).items():
        out.append(name if default is inspect.Parameter.empty else f"{name}={default!r}")
    return ", ".join(out) or "(none)"


def main(args) -> int:
    if args.action == "targets":
        return write_targets(args)
    from filters.registry import FILTERS

    for name, cls in sorted(FILTERS.items()):
        needs = ", ".join(getattr(cls, "columns", ()) or ()) or ("(per --arch)" if name == "clip_score" else "(per parameters)")
        print(f"{name}\n    {cls.description}\n    reads: {needs}\n    params: {_params(cls)}")
    print("\nCombine filters with and/or/not in a recipe (configs/filters/*.yaml): curate run --config RECIPE.yaml")
    return 0


def write_targets(args) -> int:
    import numpy as np
    import torch
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    from curate.atomic import atomic_path
    from curate.signals.clip import ClipSpec, get_tokenizer, load_clip

    if not args.output:
        raise ValueError("curate filters targets needs --output FILE.npy")
    templates = OPENAI_IMAGENET_TEMPLATES if args.templates == "openai" else SIMPLE_IMAGENET_TEMPLATES
    # stage's loader: the project's model configs (datacomp-tiny), our checkpoints, cached tags without a network
    spec = ClipSpec(args.model, args.pretrained, "targets", args.model_config)
    model = load_clip(spec, args.device).model
    tokenizer = get_tokenizer(spec)
    rows = []
    with torch.no_grad():
        for name in IMAGENET_CLASSNAMES:
            texts = [t(name) for t in templates]
            feats = []
            for i in range(0, len(texts), args.batch_size):
                f = model.encode_text(tokenizer(texts[i : i + args.batch_size]).to(args.device)).float()
                feats.append(f / f.norm(dim=-1, keepdim=True))
            mean = torch.cat(feats).mean(0)
            rows.append((mean / mean.norm()).cpu().numpy())
    arr = np.stack(rows).astype(np.float32)
    with atomic_path(args.output) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    print(f"targets: {arr.shape[0]} ImageNet class-prompt TEXT embeddings ({args.model}/{args.pretrained}, "
          f"{len(templates)} templates) -> {args.output}; use with image_based targets_kind: text")
    return 0
