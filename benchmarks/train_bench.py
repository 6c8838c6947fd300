"""Trainer speed, side by side with open_clip's own entry point, on the same synthetic shards and machine.

    python benchmarks/train_bench.py gpu [--gpus 1] [--steps 300] [--batch-size 1024] [--no-checkpointing]
        makes synthetic JPEG shards (~256 px, captions), trains DataComp's `small` configuration (ViT-B-32,
        amp, local loss, gather-with-grad, grad checkpointing, resampled shards) for --steps steps with
        `train`, then with `python -m open_clip_train.main` and DataComp's flags, and prints steady-state
        samples/s of each and the ratio (target: train >= 1.3x open_clip, data-wait < 5%).
        --no-checkpointing adds a run of ours without gradient checkpointing (same gradients, more memory).
    python benchmarks/train_bench.py cpu
        times `train --scale tiny` end to end on CPU (the demo), on 256 px JPEG shards.
    python benchmarks/train_bench.py cpu-compare [--model datacomp-tiny|ViT-S-32] [--steps 60] [--batch-size 64]
        the gpu mode's side-by-side on a CPU: `train` and `open_clip_train.main` with the same model, batch,
        samples, precision (fp32) and loader workers on the same shards, run alternately --repeats times.
        It checks the gpu mode's plumbing where no GPU is lent, and shows the loader's share on a small model
        (datacomp-tiny: 32 px images, so decoding dominates) and on a compute-bound one (ViT-S-32).

Throughput is the median samples/s over logged steps after the first 10% (start-up and warm-up excluded);
wall time includes everything (imports, model build, data start, checkpoints).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

WORDS = ("a photo of a dog cat car house tree red blue green small large old new street beach mountain city "
         "person people food table window river sky night sunset bird flower field road train boat").split()


def _shard(args) -> str:
    from PIL import Image

    path, index, per_shard, size, seed = args
    from curate.atomic import atomic_path

    rng = np.random.default_rng(seed + index)
    with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
        for i in range(per_shard):
            # smooth random images compress like photos (~10-30 KB), unlike white noise
            low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(low).resize((size, size), Image.BICUBIC)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=90)
            caption = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 16))))
            key = f"{index:05d}{i:05d}"
            for ext, data in (("jpg", buf.getvalue()), ("txt", caption.encode()),
                              ("json", json.dumps({"uid": f"{index:016x}{i:016x}"}).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def make_shards(folder: Path, n_shards: int, per_shard: int, size: int = 256, seed: int = 0) -> str:
    """Write synthetic shards (skipped if already there); returns a brace pattern over them."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(str(folder / f"{i:08d}.tar"), i, per_shard, size, seed) for i in range(n_shards)
            if not (folder / f"{i:08d}.tar").exists()]
    if todo:
        with ProcessPoolExecutor(max(1, min(len(todo), os.cpu_count() or 1))) as pool:
            list(pool.map(_shard, todo))
    return str(folder / f"{{00000000..{n_shards - 1:08d}}}.tar")


def _launcher(gpus: int) -> list[str]:
    if gpus <= 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]


def _steady(values: list[float]) -> float | None:
    values = values[max(1, len(values) // 10):] or values
    return statistics.median(values) if values else None


def run_train(scale, data, out: Path, gpus, samples=None, batch_size=None, workers=4, extra=()) -> dict:
    cmd = [*_launcher(gpus), "-m", "train.cli", "--scale", scale, "--data", data, "--output", str(out),
           "--workers", str(workers), "--no-progress", *extra]
    if samples:
        cmd += ["--samples", str(samples), "--checkpoint-every", str(10**9)]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    t = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    return {
        "wall_s": wall,
        "samples_per_s": _steady([r["samples_per_s"] for r in steps]),
        "data_wait": _steady([r["data_wait"] for r in steps]),
        "mfu": _steady([r["mfu"] for r in steps if r.get("mfu") is not None]),
        "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"], "steps": len(steps),
    }


OPEN_CLIP_DATA = re.compile(r"Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+)")


# open_clip_torch's `training` extra pins webdataset<=0.2.86: with our 0.2.111, open_clip_train's
# group_by_keys_nothrow fails on the end-of-shard marker newer webdataset yields (KeyError 'fname'). The
# reference runs with 0.2.86 first on its PYTHONPATH, installed by pip --target (or from a wheel folder with
# --ref-wheels, for a machine without network); our trainer keeps the project's pin.
REF_WEBDATASET = "webdataset==0.2.86"


def reference_path(work: Path, wheels: Path | None) -> str:
    target = work / "ref_webdataset"
    if not (target / "webdataset").is_dir():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), REF_WEBDATASET]
        if wheels:
            cmd += ["--no-index", "--find-links", str(wheels)]
        subprocess.run(cmd, check=True)
    return str(target.resolve())


# open_clip_train.main with the project's model configs (configs/models) registered, for models such as
# datacomp-tiny that open_clip does not ship
OPEN_CLIP_MAIN = ("import sys, open_clip; from train.scales import MODELS_DIR; open_clip.add_model_config(MODELS_DIR); "
                  "from open_clip_train.main import main; main(sys.argv[1:])")


def run_open_clip(data, out: Path, gpus, samples, batch_size, ref_path: str, workers=4, model="ViT-B-32",
                  precision="amp", lr="5e-4", warmup="500", extra=("--grad-checkpointing",)) -> dict:
    """open_clip's own training with the flags DataComp's training/train.py passes (defaults: the `small` scale)."""
    cmd = [*_launcher(gpus), "-c", OPEN_CLIP_MAIN] if gpus <= 1 else [*_launcher(gpus), "-m", "open_clip_train.main"]
    cmd += ["--train-data", data, "--train-num-samples", str(samples), "--dataset-type", "webdataset",
            "--dataset-resampled", "--batch-size", str(batch_size), "--epochs", "1", "--lr", str(lr),
            "--wd", "0.2", "--warmup", str(warmup), "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6",
            "--model", model, "--precision", precision, "--workers", str(workers), "--seed", "0",
            "--local-loss", "--gather-with-grad", *extra, "--save-frequency", "1",
            "--logs", str(out), "--name", "open_clip", "--log-every-n-steps", "10", "--report-to", ""]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ref_path, os.environ.get("PYTHONPATH")]))}
    t = time.time()
    subprocess.run(cmd, check=True, env=env)
    wall = time.time() - t
    text = (out / "open_clip" / "out.log").read_text()
    # open_clip prints the last step's rate; the averages over each logging window (Data/Batch (t)) are the
    # comparable numbers to our log.jsonl windows
    windows = [(float(d), float(b)) for d, b in OPEN_CLIP_DATA.findall(text) if float(b) > 0]
    rates = [batch_size * gpus / b for _, b in windows]
    waits = [d / b for d, b in windows]
    return {"wall_s": wall, "samples_per_s": _steady(rates), "data_wait": _steady(waits)}


def cpu_compare(work: Path, args) -> int:
    """Both trainers on a CPU, same model/batch/samples/precision/workers, alternated to share the load."""
    batch = args.batch_size or 64
    samples = args.steps * batch
    workers = args.workers if args.workers is not None else 1
    data = make_shards(work / "shards_cpu", args.shards or 8, args.per_shard or 512)
    ref = reference_path(work, args.ref_wheels)
    results = {"train": [], "open_clip": []}
    for r in range(args.repeats):
        for name in ("train", "open_clip"):
            out = work / f"run_{name}_{r}"
            shutil.rmtree(out, ignore_errors=True)
            if name == "train":
                extra = ["--device", "cpu", "--precision", "fp32", "--log-every", "10", "--grad-checkpointing", "off"]
                if args.model != "datacomp-tiny":
                    extra += ["--model", args.model]
                results[name].append(run_train("tiny", data, out, 1, samples=samples, batch_size=batch,
                                               workers=workers, extra=extra))
            else:
                results[name].append(run_open_clip(data, out, 1, samples, batch, ref, workers=workers, model=args.model,
                                                   precision="fp32", lr="1e-3", warmup="8", extra=()))
            print(name, r, json.dumps(results[name][-1]), flush=True)
    rate = {k: statistics.median(x["samples_per_s"] for x in v) for k, v in results.items()}
    wait = {k: statistics.median(x["data_wait"] for x in v) for k, v in results.items()}
    wall = {k: statistics.median(x["wall_s"] for x in v) for k, v in results.items()}
    print(json.dumps({"model": args.model, "batch": batch, "steps": args.steps, "workers": workers,
                      "samples_per_s": rate, "data_wait": wait, "wall_s": wall,
                      "ratio": rate["train"] / rate["open_clip"]}, indent=2))
    print(f"{args.model}, CPU, batch {batch}, {args.steps} steps: train {rate['train']:.1f} samples/s vs open_clip "
          f"{rate['open_clip']:.1f}: {rate['train'] / rate['open_clip']:.2f}x (data wait {wait['train']:.1%} vs "
          f"{wait['open_clip']:.1%}; wall {wall['train']:.0f} s vs {wall['open_clip']:.0f} s)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("gpu", "cpu", "cpu-compare"))
    p.add_argument("--model", default="datacomp-tiny", help="cpu-compare: the model both trainers train")
    p.add_argument("--ref-wheels", type=Path, default=None,
                   help=f"folder holding the {REF_WEBDATASET} wheel for the reference (machines without network)")
    p.add_argument("--repeats", type=int, default=2, help="cpu-compare: alternating runs of each trainer")
    p.add_argument("--work", type=Path, default=None, help="folder for shards and runs (default: a temp dir)")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=None,
                   help="per-GPU batch (gpu mode; default: 4096 / gpus, DataComp's small global batch)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--no-checkpointing", action="store_true",
                   help="gpu: also run ours with --grad-checkpointing off (an equivalent option: same gradients)")
    p.add_argument("--shards", type=int, default=None)
    p.add_argument("--per-shard", type=int, default=None)
    args = p.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="train_bench_"))
    try:
        if args.mode == "cpu":
            t = time.time()
            data = make_shards(work / "shards_cpu", args.shards or 8, args.per_shard or 256)
            print(f"shards: {time.time() - t:.1f} s")
            shutil.rmtree(work / "run_tiny", ignore_errors=True)
            r = run_train("tiny", data, work / "run_tiny", 1, workers=args.workers if args.workers is not None else 1,
                          extra=["--device", "cpu"])
            print(json.dumps({"tiny_cpu": r}, indent=2))
            print(f"tiny scale on CPU: {r['wall_s']:.1f} s wall, {r['samples_per_s']:.0f} samples/s steady, "
                  f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}")
            return 0

        if args.mode == "cpu-compare":
            return cpu_compare(work, args)

        batch = args.batch_size or 4096 // args.gpus
        samples = args.steps * batch * args.gpus
        workers = args.workers if args.workers is not None else max(1, min(8, (os.cpu_count() or 2) // args.gpus - 1))
        t = time.time()
        data = make_shards(work / "shards", args.shards or 64, args.per_shard or 1000)
        print(f"shards: {time.time() - t:.1f} s")
        for name in ("run_train", "run_train_nockpt", "run_open_clip"):
            shutil.rmtree(work / name, ignore_errors=True)
        # a log record every 10 steps, as open_clip's here (each record synchronises with the GPU)
        ours = run_train("small", data, work / "run_train", args.gpus, samples=samples, batch_size=batch,
                         workers=workers, extra=["--log-every", "10"])
        ref = run_open_clip(data, work / "run_open_clip", args.gpus, samples, batch, reference_path(work, args.ref_wheels),
                            workers=workers)
        results = {"train": ours, "open_clip": ref}
        if args.no_checkpointing:  # same gradients, more memory: may not fit the batch on every GPU
            try:
                results["train_no_checkpointing"] = run_train(
                    "small", data, work / "run_train_nockpt", args.gpus, samples=samples, batch_size=batch,
                    workers=workers, extra=["--grad-checkpointing", "off", "--log-every", "10"])
            except subprocess.CalledProcessError as e:
                results["train_no_checkpointing"] = {"error": f"exit {e.returncode} (out of memory?)"}
        ratios = {name: r["samples_per_s"] / ref["samples_per_s"] for name, r in results.items()
                  if name != "open_clip" and r.get("samples_per_s") and ref["samples_per_s"]}
        print(json.dumps({**results, "ratios": ratios, "gpus": args.gpus, "batch_per_gpu": batch,
                          "steps": args.steps, "workers": workers}, indent=2))
        for name, ratio in ratios.items():
            r = results[name]
            print(f"{name} {r['samples_per_s']:.0f} samples/s vs open_clip {ref['samples_per_s']:.0f}: "
                  f"{ratio:.2f}x (data wait {r['data_wait']:.1%} vs {ref['data_wait']:.1%})")
        return 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
