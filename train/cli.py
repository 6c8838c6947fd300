"""`train`: train a CLIP on webdataset shards with DataComp's fixed-budget protocol (one GPU, many, or a CPU)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .data import DataError
from .scales import SCALES_YAML, ScaleTooLarge, UnknownScale, check_fits, get_scale, load_scales

EPILOG = """\
examples:
  train soup RUN1/checkpoints/final.pt RUN2/checkpoints/final.pt --output soup.pt   # average weights
  train --scale tiny --data shards/ --output runs/tiny                  # CPU demo, about a minute
  torchrun --nproc_per_node 8 -m train.cli --scale medium --data 'pool/{00000000..00003199}.tar' --output runs/m
  train --scale small --data a/::b/ --output runs/s --resume latest     # continue after a crash
  train --scale large --data shards/ --output runs/l --accum-freq 4 --keep 2   # less GPU memory and disk

--data takes a folder (all its *.tar), a brace pattern, a glob or one .tar; join several with '::'.
Each sample needs {key}.jpg|png|webp and {key}.txt; others are skipped and counted.
"""


def _scale_help() -> str:
    try:
        scales = load_scales()
    except OSError:
        return f"a scale of {SCALES_YAML}"
    rows = [f"{s.name} ({s.samples_seen:,} samples, {s.model}, batch {s.global_batch})" for s in scales.values()]
    return "one of: " + "; ".join(rows)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", required=True, help=_scale_help())
    p.add_argument("--data", required=True, help="webdataset shards: folder, {brace} pattern, glob or .tar; '::' joins")
    p.add_argument("--output", required=True, type=Path, help="run folder: info.json, log.jsonl, checkpoints/")
    p.add_argument("--resume", default=None,
                   help="'latest' (the newest checkpoint of --output; starts fresh if none) or a checkpoint path")
    p.add_argument("--precision", choices=("amp", "amp_bf16", "fp32"), default=None,
                   help="autocast precision (default: the scale's; amp falls back to fp32 without a GPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loading processes per rank (0: in the main process). Default: on resume the "
                        "checkpoint's; on a GPU the rank's share of the CPUs less one (at most 16); on a CPU 4, "
                        "or the usable cores when fewer")
    p.add_argument("--seed", type=int, default=0, help="seeds model init, shard sampling and augmentation")
    p.add_argument("--batch-size", type=int, default=None,
                   help="per-rank batch of one forward pass; the global batch becomes batch x accum-freq x ranks "
                        "(non-standard: changes the global batch)")
    p.add_argument("--accum-freq", type=_positive, default=1, metavar="K",
                   help="run each step's batch as K micro-batches with cached features, as open_clip_train: the "
                        "same loss and gradients as one pass, in less memory (recorded, not non-standard)")
    p.add_argument("--grad-checkpointing", choices=("on", "off"), default=None,
                   help="override the scale's gradient checkpointing (DataComp's scales: on). Off trades GPU memory "
                        "for a third less compute with the same gradients (recorded, not non-standard)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples seen override (non-standard: for tests and demos)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints (default: five per run, as DataComp); one is always written at the end")
    p.add_argument("--keep", type=_positive, default=None, metavar="N",
                   help="keep only the newest N step checkpoints, pruned after each new one is written whole "
                        "(default: all, as DataComp); final.pt is never deleted")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--mix", type=int, default=4, help="shards each worker reads at once, interleaved (shuffling)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report-to", choices=("tensorboard",), action="append", default=[],
                   help="also write the step log's loss, learning rate and throughput as TensorBoard event files "
                        "under OUTPUT/tensorboard (open_clip_train's names; `tensorboard --logdir OUTPUT`). "
                        "RUN/training.png plots them in any case")
    p.add_argument("--log-every", type=int, default=None,
                   help="steps per log.jsonl record (throughput and data wait are averaged over them). Each record "
                        "waits for the GPU to finish its queued work; default 1 on a CPU, 10 on a GPU")
    ns = p.add_argument_group("beyond DataComp (non-standard: recorded in info.json, log.jsonl and checkpoints)")
    ns.add_argument("--model", default=None, help="any open_clip model name instead of the scale's (e.g. convnext_base)")
    ns.add_argument("--patch-dropout", type=float, default=None, help="FLIP: fraction of image patches dropped")
    ns.add_argument("--image-size", type=int, default=None, help="CLIPA: train at a reduced image resolution")
    ns.add_argument("--aug-scale", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="random-resized-crop scale range (open_clip default 0.9 1.0)")
    ns.add_argument("--re-prob", type=float, default=None, help="random erasing probability")
    ns.add_argument("--siglip", action="store_true", help="SigLIP's sigmoid loss instead of the contrastive loss")
    ns.add_argument("--torch-compile", action="store_true", help="torch.compile the model")
    return p


def _check_fits(scale, args) -> None:
    """Refuse, before loading data or model, a scale whose batch cannot fit this device (scales.check_fits)."""
    import os

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_fits(scale, device, model=args.model, image_size=args.image_size,
               world_size=int(os.environ.get("WORLD_SIZE", "1")), accum_freq=args.accum_freq,
               batch_size=args.batch_size, samples=args.samples)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soup"]:
        from .soup import main as soup_main

        return soup_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("train").setLevel(logging.INFO)
    try:
        scale = get_scale(args.scale)
        _check_fits(scale, args)
    except (UnknownScale, ScaleTooLarge) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    from .loop import Options, run

    opts = Options(scale=scale, data=args.data, output=args.output, resume=args.resume,
                   precision=args.precision, workers=args.workers, seed=args.seed, batch_size=args.batch_size,
                   samples=args.samples, checkpoint_every=args.checkpoint_every, device=args.device,
                   mix=args.mix, progress=not args.no_progress, keep=args.keep,
                   log_every=None if args.log_every is None else max(1, args.log_every),
                   accum_freq=args.accum_freq, report_to=tuple(args.report_to), model=args.model,
                   patch_dropout=args.patch_dropout, image_size=args.image_size,
                   aug_scale=tuple(args.aug_scale) if args.aug_scale else None, re_prob=args.re_prob,
                   siglip=args.siglip, compile=args.torch_compile,
                   grad_checkpointing=None if args.grad_checkpointing is None else args.grad_checkpointing == "on")
    from .checkpoint import CheckpointError, remove_stale_temporaries
    from .tensorboard import TensorBoardUnavailable

    try:
        remove_stale_temporaries(args.output)  # left by a killed run
        summary = run(opts)
    except (DataError, CheckpointError, TensorBoardUnavailable) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    print(f"trained {summary['steps']} steps, {summary['samples_seen']:,} samples seen; "
          f"skipped {sum(summary['skipped'].values())} ({summary['skipped']}); weights: {summary['final']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
