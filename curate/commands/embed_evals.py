"""`curate embed-evals`: write the eval images' CLIP embeddings for `curate decontaminate --eval-embeddings`."""

from __future__ import annotations

import json

NAME = "embed-evals"
ORDER = 27
HELP = "embed the eval sets' images with the pool's CLIP model (the npz decontaminate --eval-embeddings reads)"
DESCRIPTION = ("Reads every image of the eval sets under --eval-dir (wds_<task>_test/test/*.tar, as decontaminate "
               "does), embeds it exactly as `curate stage --signals clip` embeds pool images with the same --model "
               "and --pretrained, and writes an npz with embeddings (L2-normalised float32), eval_set and eval_key "
               "per row. Use the model whose embeddings the pool has: decontaminate compares like with like.")


def add_arguments(p) -> None:
    p.add_argument("--eval-dir", required=True, help="folder (or s3:// prefix) holding wds_<task>_test eval sets")
    p.add_argument("--output", required=True, metavar="NPZ", help="the npz to write, a file or an s3:// object (written whole, then renamed)")
    p.add_argument("--model", default="ViT-L-14", metavar="ARCH", help="open_clip architecture of the pool's embeddings (default ViT-L-14)")
    p.add_argument("--pretrained", default="openai", metavar="TAG_OR_PATH",
                   help="its weights: a pretrained tag or a local checkpoint file, as given to `curate stage` (default openai)")
    p.add_argument("--clip-tag", default=None, metavar="TAG", help="the pool's column tag for this model (recorded in the npz)")
    p.add_argument("--model-config", default=None, metavar="FILE.json", help="an extra open_clip model config")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="autocast precision (default as stage: fp16 on a GPU, fp32 on CPU)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")


def main(args) -> int:
    import torch

    from curate.eval_embeddings import embed_eval_sets
    from curate.paths import refuse_overlap
    from curate.signals.clip import ClipSpec, WeightsNotFound

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    from curate.stage import MODEL_FILE_USE
    from curate.storage import refuse_url

    refuse_url(args.pretrained, "--pretrained", MODEL_FILE_USE)  # --eval-dir and --output may be s3:// URLs
    refuse_url(args.model_config, "--model-config", MODEL_FILE_USE)
    refuse_overlap({"the eval folder": args.eval_dir}, args.output)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = args.precision if args.precision != "auto" else ("fp16" if device.startswith("cuda") else "fp32")
    spec = ClipSpec(args.model, args.pretrained, args.clip_tag, args.model_config)
    try:
        s = embed_eval_sets(args.eval_dir, spec, args.output, device=device, precision=precision, batch_size=args.batch_size)
    except WeightsNotFound as e:
        raise ValueError(e.message("--pretrained PATH")) from None
    print(f"embed-evals: {s['eval_images']} eval images embedded with {args.model} ({s['clip_tag']}, width {s['width']}) "
          f"on {device} -> {s['output']}")
    if s["eval_images_failed"]:
        print(f"  eval images that failed to decode: {json.dumps(s['eval_images_failed'])}")
    return 0
