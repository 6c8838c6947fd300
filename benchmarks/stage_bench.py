"""`curate stage` throughput, side by side with the references, in one run.

CPU modes (default), one core, over the same JPEG shards on disk (tar read included everywhere):
  decode        read the tars, Image.open(bytes).load()                         the floor of an exact pHash
  imagehash     read the tars, str(imagehash.phash(Image.open(bytes)))            the usual loop
  stage phash   run_stage(["phash"]) on one process: read, decode, hash, write parquet
Each mode runs over every shard per round, modes rotated, best round kept (a shared machine's bursts
should not land on one mode only).

One decode per image (`--signals phash,clip`, default on): counts the decodes of one pass computing
phash and CLIP (a tiny open_clip model with random weights, saved to a local checkpoint) against
two separate passes, and times both.

GPU mode (`--gpu`; needs CUDA): for ViT-B-32 and ViT-L-14 (random weights saved to a local checkpoint:
throughput does not depend on the weights, and no download is needed), images/s of
  forward       encode_image + encode_text on batches already on the GPU (the model's rate alone)
  stage         run_stage(["clip"]) from the shards: loader workers read, decode, preprocess, tokenise
  dataloader    a plain PyTorch DataLoader over extracted JPEG files: PIL open + preprocess + tokenise
                in workers, the model in the main process, no pipelining
The issue's target: stage >= 80% of forward.

Run: .venv/bin/python benchmarks/stage_bench.py [--n 2000] [--rounds 3]                   # CPU parts
     .venv/bin/python benchmarks/stage_bench.py --gpu --n 20000 --workers 15 [--models ViT-B-32,ViT-L-14]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.phash_bench import cpu_model, make_jpegs  # noqa: E402


def write_pool(root: Path, images: list[bytes], per_shard: int) -> Path:
    """img2dataset-like shards: {key}.jpg, .txt, .json with uid; stats files mark them whole."""
    if root.exists():
        shutil.rmtree(root)
    shards = root / "shards"
    shards.mkdir(parents=True)
    words = ["a", "photo", "of", "the", "red", "small", "dog", "city", "at", "night", "with", "two", "people"]
    rng = np.random.default_rng(0)
    for sid in range(0, (len(images) + per_shard - 1) // per_shard):
        chunk = images[sid * per_shard:(sid + 1) * per_shard]
        with tarfile.open(shards / f"{sid:08d}.tar", "w") as tar:
            for j, data in enumerate(chunk):
                key = f"{sid:05d}{j:04d}"
                uid = f"{sid * per_shard + j + 1:032x}"
                cap = " ".join(rng.choice(words, int(rng.integers(3, 20))))
                for ext, body in (("jpg", data), ("txt", cap.encode()), ("json", json.dumps({"uid": uid, "caption": cap}).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
        (shards / f"{sid:08d}_stats.json").write_text(json.dumps({"count": len(chunk), "successes": len(chunk)}))
    return root


def tar_images(pool: Path):
    from curate.wds import ReadReport, iter_samples

    for tar in sorted((pool / "shards").glob("*.tar")):
        for s in iter_samples(str(tar), ReadReport()):
            yield s.files["jpg"]


def mode_decode(pool: Path) -> None:
    for b in tar_images(pool):
        Image.open(io.BytesIO(b)).load()


def mode_imagehash(pool: Path) -> list[str]:
    import imagehash

    return [str(imagehash.phash(Image.open(io.BytesIO(b)))) for b in tar_images(pool)]


def mode_stage(pool: Path, signals=("phash",), options=None) -> dict:
    from curate.engines import LocalEngine
    from curate.pool import Pool
    from curate.stage import run_stage

    shutil.rmtree(pool / "columns", ignore_errors=True)
    with LocalEngine(1) as engine:
        return run_stage(Pool(pool), list(signals), engine, options=options)


def cpu_part(args, work: Path) -> None:
    import PIL

    from curate.pool import Pool
    from curate.stage import read_signal

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    t = time.perf_counter()
    images = make_jpegs(args.n, args.quality)
    pool = write_pool(work / "jpeg_pool", images, args.per_shard)
    mb = sum(map(len, images)) / 1e6
    print(f"cpu: {cpu_model()} ({os.cpu_count()} visible, pinned to 1); python {sys.version.split()[0]}, pillow {PIL.__version__}")
    print(f"{args.n} JPEGs q{args.quality}, 256-512 px, {mb:.1f} MB in {len(list((pool / 'shards').glob('*.tar')))} "
          f"shards on disk (made in {time.perf_counter() - t:.1f}s)")

    mode_stage(pool)
    ours = read_signal(Pool(pool), "phash").column("phash").to_pylist()
    assert ours == mode_imagehash(pool), "stage pHash differs from imagehash"
    print("hashes: stage == imagehash on all images")
    modes = {"decode": lambda: mode_decode(pool), "imagehash": lambda: mode_imagehash(pool),
             "stage phash": lambda: mode_stage(pool)}
    best = {k: float("inf") for k in modes}
    names = list(modes)
    for r in range(args.rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t = time.perf_counter()
            modes[name]()
            best[name] = min(best[name], time.perf_counter() - t)
    floor = best["decode"]
    print(f"\n{'mode':<14}{'images/s':>10}{'ms/image':>10}{'time / decode':>15}")
    for name, sec in best.items():
        print(f"{name:<14}{args.n / sec:>10.0f}{sec / args.n * 1e3:>10.3f}{sec / floor:>15.3f}")
    print(f"stage phash over decode-only: +{(best['stage phash'] / floor - 1) * 100:.1f}% (target <= +15%); "
          f"imagehash loop +{(best['imagehash'] / floor - 1) * 100:.1f}%; "
          f"stage is {best['imagehash'] / best['stage phash']:.2f}x the imagehash loop")
    if args.one_decode:
        one_decode_part(args, pool, work)


def one_decode_part(args, pool: Path, work: Path) -> None:
    import open_clip
    import torch

    import curate.signals.shardpass as shardpass
    from curate.signals.clip import ClipSpec, register_configs
    from curate.stage import StageOptions

    register_configs()
    torch.manual_seed(0)
    ckpt = work / "tiny.pt"
    torch.save(open_clip.create_model("datacomp-tiny").state_dict(), ckpt)
    opts = StageOptions(models=(ClipSpec("datacomp-tiny", str(ckpt), "tiny"),), device="cpu", torch_threads=1,
                        batch_size=64, progress=False)
    count = [0]
    real = shardpass.decode_image

    def counting(data, *a, **k):
        count[0] += 1
        return real(data, *a, **k)

    shardpass.decode_image = counting
    try:
        mode_stage(pool, ("phash", "clip"), opts)  # warm: model load, transforms, tokenizer
        rows = {}
        for label, passes in (("one pass: phash,clip", [("phash", "clip")]),
                              ("two passes: phash; clip", [("phash",), ("clip",)])):
            best, decodes = float("inf"), 0
            for _ in range(args.rounds):
                count[0] = 0
                shutil.rmtree(pool / "columns", ignore_errors=True)
                t = time.perf_counter()
                for sig in passes:
                    from curate.engines import LocalEngine
                    from curate.pool import Pool
                    from curate.stage import run_stage

                    with LocalEngine(1) as engine:
                        run_stage(Pool(pool), list(sig), engine, options=opts)
                best = min(best, time.perf_counter() - t)
                decodes = count[0]
            rows[label] = (best, decodes)
    finally:
        shardpass.decode_image = real
    print(f"\n--signals phash,clip (tiny open_clip model, CPU, 1 thread), {args.n} images:")
    print(f"{'run':<26}{'decodes':>9}{'per image':>11}{'images/s':>10}")
    for label, (sec, dec) in rows.items():
        print(f"{label:<26}{dec:>9}{dec / args.n:>11.2f}{args.n / sec:>10.0f}")


# ---- GPU ------------------------------------------------------------------------------------------------


def gpu_part(args, work: Path) -> None:
    import open_clip
    import torch

    from curate.signals.clip import ClipSpec, get_tokenizer, get_transform, launch, load_clip
    from curate.stage import StageOptions

    assert torch.cuda.is_available(), "--gpu needs CUDA"
    print(f"gpu: {torch.cuda.get_device_name()}, torch {torch.__version__}, open_clip {open_clip.__version__}, "
          f"{len(os.sched_getaffinity(0))} cores, {args.workers} loader workers, batch {args.batch_size}, {args.precision}")
    t = time.perf_counter()
    images = make_jpegs(min(args.n, args.unique), args.quality)
    images = [images[i % len(images)] for i in range(args.n)]
    pool = write_pool(work / "gpu_pool", images, args.per_shard)
    files = work / "gpu_files"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir()
    for i, b in enumerate(images):
        (files / f"{i:07d}.jpg").write_bytes(b)
    caps = [c for c in (json.loads(s) for s in _captions(pool))]
    print(f"{args.n} JPEGs 256-512 px in {len(list((pool / 'shards').glob('*.tar')))} shards (made in {time.perf_counter() - t:.0f}s)")
    for arch in args.models.split(","):
        tag = {"ViT-B-32": "b32", "ViT-L-14": "l14"}.get(arch, arch.lower())
        ckpt = work / f"{arch}-random.pt"
        if not ckpt.exists():
            torch.save(open_clip.create_model(arch).state_dict(), ckpt)
        spec = ClipSpec(arch, str(ckpt), tag)
        loaded = load_clip(spec, "cuda", args.precision)
        tok = get_tokenizer(spec)
        tf = get_transform(loaded.preprocess_cfg)
        # forward only: preprocessed batches already on the GPU
        x = torch.stack([tf(Image.open(io.BytesIO(images[i % len(images)])).convert("RGB")) for i in range(args.batch_size)]).cuda()
        tokens = tok(caps[:args.batch_size]).cuda()
        for _ in range(3):
            launch(loaded, x, tokens)
        torch.cuda.synchronize()
        steps = max(5, args.n // args.batch_size)
        t = time.perf_counter()
        for _ in range(steps):
            launch(loaded, x, tokens)
        torch.cuda.synchronize()
        forward = steps * args.batch_size / (time.perf_counter() - t)
        # the stage, from shards
        opts = StageOptions(models=(spec,), device="cuda", precision=args.precision, batch_size=args.batch_size,
                            loader_workers=args.workers, progress=False)
        mode_stage(pool, ("clip",), opts)  # warm-up run (worker start, cudnn autotune)
        t = time.perf_counter()
        stats = mode_stage(pool, ("clip",), opts)
        stage = stats["samples"] / (time.perf_counter() - t)
        stage_pp = None
        if args.with_phash:
            t = time.perf_counter()
            stats = mode_stage(pool, ("phash", "clip"), opts)
            stage_pp = stats["samples"] / (time.perf_counter() - t)
        # a plain DataLoader + PIL loop
        plain = plain_loop(loaded, tf, tok, sorted(files.glob("*.jpg")), caps, args)
        print(f"\n{arch} ({args.precision}, batch {args.batch_size}):")
        print(f"  forward only            {forward:>9.0f} images/s")
        print(f"  stage clip from shards  {stage:>9.0f} images/s  ({stage / forward * 100:.0f}% of forward; target >= 80%)")
        if stage_pp:
            print(f"  stage phash,clip        {stage_pp:>9.0f} images/s  ({stage_pp / forward * 100:.0f}% of forward)")
        print(f"  DataLoader + PIL loop   {plain:>9.0f} images/s  ({plain / forward * 100:.0f}% of forward)")
        del loaded
        torch.cuda.empty_cache()


def _captions(pool: Path):
    from curate.wds import ReadReport, iter_samples

    for tar in sorted((pool / "shards").glob("*.tar")):
        for s in iter_samples(str(tar), ReadReport()):
            yield json.dumps(s.files["txt"].decode())


class _Files:
    """A plain map-style dataset: one JPEG file and caption per item."""

    def __init__(self, paths, caps, tf, tok):
        self.paths, self.caps, self.tf, self.tok = paths, caps, tf, tok

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.tf(Image.open(self.paths[i]).convert("RGB")), self.tok([self.caps[i]])[0]


def plain_loop(loaded, tf, tok, paths, caps, args) -> float:
    import torch
    from torch.utils.data import DataLoader

    from curate.signals.clip import launch

    dl = DataLoader(_Files(paths, caps, tf, tok), batch_size=args.batch_size, num_workers=args.workers, pin_memory=True)
    t = time.perf_counter()
    n = 0
    for x, tokens in dl:
        img, txt = launch(loaded, x, tokens)
        img.cpu()
        txt.cpu()
        n += len(x)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--per-shard", type=int, default=500)
    ap.add_argument("--no-one-decode", dest="one_decode", action="store_false", help="skip the phash,clip decode count")
    ap.add_argument("--gpu", action="store_true", help="the GPU mode instead of the CPU parts")
    ap.add_argument("--models", default="ViT-B-32,ViT-L-14")
    ap.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=max(1, len(os.sched_getaffinity(0)) - 1))
    ap.add_argument("--unique", type=int, default=2000, help="distinct images generated (repeated up to --n)")
    ap.add_argument("--with-phash", action="store_true", help="GPU mode: also time --signals phash,clip")
    ap.add_argument("--work", default=str(Path(__file__).resolve().parent / "_work" / "stage"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.gpu:
        gpu_part(args, work)
    else:
        cpu_part(args, work)


if __name__ == "__main__":
    main()
