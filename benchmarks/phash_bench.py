"""pHash throughput on one core, side by side in one run: decode only, our decode + pHash, imagehash.

Why: the pHash stage should cost little more than decoding, the physical floor of an exact hash
(imagehash's pHash needs every pixel). The images are generated photo-like JPEGs (256-512 px),
kept in memory as a shard's bytes would be after reading the tar, so file I/O is not measured.

Modes, each over the same images, interleaved chunk by chunk over several rounds (each chunk's
best round kept, so another process's burst on a shared machine does not land on one mode only):
  decode           Image.open(bytes).load()                                   the floor
  decode+L         ... + convert("L")                                          Pillow's floor of a pHash
  ours             decode_image(bytes, forms=()) + phash(image)                per image
  ours_batch       decode_image + pixels32 per image, hash_pixels per chunk    shard-style (the stage's way)
  imagehash        str(imagehash.phash(Image.open(bytes)))                     the reference loop

Then where ours_batch's time goes, each step timed in place on one chunk: decode_image's own checks over a
bare decode, `pixels32` (Arrow view of the decoded pixels + the fused numba kernel), the batched DCT.
The first kernel call of the process is timed too: a compile on a fresh machine, a cache load after.

Run: .venv/bin/python benchmarks/phash_bench.py [--n 2000] [--rounds 5] [--quality 90] [--chunk 256]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: BLAS must not spread the matmuls over others

import argparse  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import imagehash  # noqa: E402
import numpy as np  # noqa: E402
import PIL  # noqa: E402
from PIL import Image  # noqa: E402

from curate.signals.decode import decode_image  # noqa: E402
from curate.signals.phash import hash_pixels, phash, pixels32, uint64_to_hex  # noqa: E402


def make_jpegs(n: int, quality: int, seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs: colour waves, blobs and noise, sides drawn from 256..512."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(256, 513, 2))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        f = rng.uniform(1, 8, (3, 2)).astype(np.float32) * np.float32(2 * np.pi)
        img = np.stack([np.sin(f[c, 0] * x / w + f[c, 1] * y / h + c) for c in range(3)], -1) * 90 + 128
        img += rng.normal(0, 10, img.shape).astype(np.float32)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def run_decode(data: list[bytes]) -> None:
    for b in data:
        Image.open(io.BytesIO(b)).load()


def run_decode_l(data: list[bytes]) -> None:
    for b in data:
        im = Image.open(io.BytesIO(b))
        im.load()
        im.convert("L")


def run_ours(data: list[bytes]) -> list[str]:
    return [phash(decode_image(b, forms=()).image) for b in data]


def run_ours_batch(data: list[bytes]) -> list[str]:
    return uint64_to_hex(hash_pixels(np.stack([pixels32(decode_image(b, forms=()).image) for b in data])))


def run_imagehash(data: list[bytes]) -> list[str]:
    return [str(imagehash.phash(Image.open(io.BytesIO(b)))) for b in data]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--chunk", type=int, default=256, help="images per timed chunk (ours_batch hashes a chunk at once)")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this core (default: the first allowed)")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {args.cpu if args.cpu is not None else allowed[0]})

    t = time.perf_counter()
    data = make_jpegs(args.n, args.quality)
    mb = sum(map(len, data)) / 1e6
    print(f"cpu: {cpu_model()} ({os.cpu_count()} visible, pinned to 1); python {platform.python_version()}, "
          f"pillow {PIL.__version__}, numpy {np.__version__}, imagehash {imagehash.__version__}")
    print(f"{args.n} JPEGs q{args.quality}, 256-512 px, {mb:.1f} MB in memory (made in {time.perf_counter() - t:.1f}s)")

    t = time.perf_counter()
    pixels32(Image.open(io.BytesIO(data[0])))
    print(f"first kernel call of this process: {time.perf_counter() - t:.2f} s (numba compile, or its cache load)")

    ours = run_ours(data)
    assert ours == run_imagehash(data), "pHash differs from imagehash"
    assert run_ours_batch(data) == ours, "batched pHash differs"
    print("hashes: ours == batched == imagehash on all images")

    modes = {"decode": run_decode, "decode+L": run_decode_l, "ours": run_ours,
             "ours_batch": run_ours_batch, "imagehash": run_imagehash}
    # Interleave modes chunk by chunk (rotating which goes first) and keep each chunk's best round,
    # so a burst from another process on a shared machine cannot land on one mode only.
    chunks = [data[i:i + args.chunk] for i in range(0, len(data), args.chunk)]
    chunk_best = {k: [float("inf")] * len(chunks) for k in modes}
    names = list(modes)
    for r in range(args.rounds):
        for c, chunk in enumerate(chunks):
            k = (r + c) % len(names)
            for name in names[k:] + names[:k]:
                t = time.perf_counter()
                modes[name](chunk)
                chunk_best[name][c] = min(chunk_best[name][c], time.perf_counter() - t)
    best = {k: sum(v) for k, v in chunk_best.items()}

    floor = best["decode"]
    print(f"\n{'mode':<12}{'images/s':>10}{'ms/image':>10}{'time / decode':>15}")
    for name, sec in best.items():
        print(f"{name:<12}{args.n / sec:>10.0f}{sec / args.n * 1e3:>10.3f}{sec / floor:>15.3f}")
    ours_best = min(best["ours"], best["ours_batch"])
    print(f"\npHash over decode-only: ours +{(ours_best / floor - 1) * 100:.1f}% "
          f"(target <= +15%), imagehash +{(best['imagehash'] / floor - 1) * 100:.1f}%; "
          f"convert('L') alone +{(best['decode+L'] / floor - 1) * 100:.1f}%")
    print(f"speedup over the imagehash loop: {best['imagehash'] / ours_best:.2f}x")
    breakdown(data[:args.chunk], 2 * args.rounds)


def breakdown(data: list[bytes], rounds: int) -> None:
    """Where ours_batch's time over a bare decode goes, per image, each step measured in place (the pixels
    just decoded, as in the stage): rounds interleaved, each step's best round kept."""
    def wrapped() -> None:
        for b in data:
            decode_image(b, forms=())  # dropped at once, as in the stage: its memory is reused

    def wrapped_pixels32() -> None:
        for b in data:
            pixels32(decode_image(b, forms=()).image)

    images = [decode_image(b, forms=()).image for b in data[:8]]
    steps = {"decode": lambda: run_decode(data), "decode_image": wrapped, "decode_image+pixels32": wrapped_pixels32}
    stack = np.stack([pixels32(im) for im in images] * (len(data) // len(images) + 1))[:len(data)]
    steps["hash_pixels"] = lambda: hash_pixels(stack)
    best = {k: float("inf") for k in steps}
    for r in range(rounds):
        for name in list(steps)[r % len(steps):] + list(steps)[:r % len(steps)]:
            t = time.perf_counter()
            steps[name]()
            best[name] = min(best[name], time.perf_counter() - t)
    ms = {k: v / len(data) * 1e3 for k, v in best.items()}
    print(f"\nper image, in place (ms): decode {ms['decode']:.3f}; decode_image's checks "
          f"+{ms['decode_image'] - ms['decode']:.3f}; pixels32 (Arrow view + fused kernel) "
          f"+{ms['decode_image+pixels32'] - ms['decode_image']:.3f}; DCT+median batched {ms['hash_pixels']:.4f}")


if __name__ == "__main__":
    main()
