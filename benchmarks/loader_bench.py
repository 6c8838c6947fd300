"""The trainer's data loader alone, side by side with open_clip_train's (`get_wds_dataset`), on the same shards.

    .venv/bin/python benchmarks/loader_bench.py [--workers 1 2] [--batch-size 256] [--batches 30] [--repeats 3]
        [--work DIR] [--ref-wheels DIR]

On a GPU the loader decides the data-wait fraction: each GPU gets a few CPU workers, and a worker that delivers
fewer samples/s than the GPU consumes leaves it waiting. This measures what one worker delivers, with no model in
the way, so it runs on any machine. Both loaders get the same ViT-B-32 train transform (open_clip's
`image_transform(224, is_train=True)`: RandomResizedCrop, RGB, ToTensor, Normalize) and tokenizer, DataComp's
resampled shards, and the same synthetic ~256 px JPEG shards (benchmarks/train_bench.py's generator).
Ours also seeds each sample's augmentation (for exact resume); open_clip's adds its sample shuffle buffer.
Ours hands on uint8 batches, as the trainer's loader does for a GPU, which normalises them there
(train/pixels.py: bit-identical to the transform's ToTensor and Normalize, one gather per batch on the GPU).

Each measurement is its own process (the reference needs webdataset 0.2.86 first on its path, see
train_bench.py), alternating ours and theirs; the first 2 x workers batches (pool start, prefetch) are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _transform_and_tokenizer():
    import open_clip

    preprocess = open_clip.image_transform(224, is_train=True, mean=open_clip.OPENAI_DATASET_MEAN,
                                           std=open_clip.OPENAI_DATASET_STD)
    return preprocess, open_clip.get_tokenizer("ViT-B-32")


def _ours(shards: str, batch_size: int, workers: int):
    from train.data import Position, make_loader, resolve_shards
    from train.pixels import Pixels

    preprocess, tokenizer = _transform_and_tokenizer()
    loader = make_loader(resolve_shards(shards), batch_size, Pixels(preprocess), tokenizer, seed=0, rank=0,
                         num_workers=workers, position=Position(workers))
    for batch in loader:
        yield batch["images"].shape[0]


def _open_clip(shards: str, batch_size: int, workers: int):
    from open_clip_train.data import get_wds_dataset

    preprocess, tokenizer = _transform_and_tokenizer()
    args = SimpleNamespace(train_data=shards, val_data=None, train_num_samples=10**9, dataset_resampled=True,
                           train_data_upsampling_factors=None, seed=0, batch_size=batch_size, workers=workers,
                           world_size=1)
    loader = get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer).dataloader
    for images, _texts in loader:
        yield images.shape[0]


def one(impl: str, shards: str, batch_size: int, workers: int, batches: int) -> dict:
    import torch

    torch.set_num_threads(1)  # the main process only collates; keep it off the workers' cores
    it = (_ours if impl == "ours" else _open_clip)(shards, batch_size, workers)
    warm = 2 * max(1, workers)
    t0 = time.perf_counter()
    for _ in range(warm):
        next(it)
    t1 = time.perf_counter()
    samples = sum(next(it) for _ in range(batches))
    t2 = time.perf_counter()
    return {"samples_per_s": samples / (t2 - t1), "warmup_s": t1 - t0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=30, help="timed batches per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--per-shard", type=int, default=512)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "loaderbench")
    ap.add_argument("--ref-wheels", type=Path, default=None, help="folder with the webdataset==0.2.86 wheel (offline)")
    ap.add_argument("--one", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        impl, shards, batch_size, workers, batches = args.one
        print(json.dumps(one(impl, shards, int(batch_size), int(workers), int(batches))))
        return

    from train_bench import make_shards, reference_path

    args.work.mkdir(parents=True, exist_ok=True)
    shards = make_shards(args.work / "shards", args.shards, args.per_shard)
    ref_path = reference_path(args.work, args.ref_wheels)
    root = str(HERE.parent)
    env = {"ours": {**os.environ, "PYTHONPATH": root},
           "open_clip": {**os.environ, "PYTHONPATH": os.pathsep.join([ref_path, root])}}
    print(f"cpu: {os.cpu_count()} visible; batch {args.batch_size}, {args.batches} timed batches, "
          f"{args.shards} shards x {args.per_shard} ~256 px JPEGs, ViT-B-32 train transform (224 px); ours hands on uint8")
    print("| loader workers | ours samples/s (median) | open_clip samples/s (median) | ratio | runs (ours / theirs) |")
    print("|---|---|---|---|---|")
    for workers in args.workers:
        rates = {"ours": [], "open_clip": []}
        for _ in range(args.repeats):
            for impl in ("ours", "open_clip"):
                out = subprocess.run([sys.executable, __file__, "--one", impl, shards, str(args.batch_size),
                                      str(workers), str(args.batches)], env=env[impl], check=True,
                                     capture_output=True, text=True).stdout
                rates[impl].append(json.loads(out.strip().splitlines()[-1])["samples_per_s"])
        ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["open_clip"])
        runs = " / ".join(", ".join(f"{r:.0f}" for r in rates[k]) for k in ("ours", "open_clip"))
        print(f"| {workers} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x | {runs} |", flush=True)


if __name__ == "__main__":
    main()
