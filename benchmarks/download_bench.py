"""`curate download` throughput before and after its network guards, side by side with img2dataset alone.

    .venv/bin/python benchmarks/download_bench.py [--n 5000] [--rounds 3] [--processes 2] [--threads 64]
                                                  [--image-size 512] [--shard-size N/4] [--write-results]

1. Generates (once; reused while its manifest matches) --n JPEGs, 256-640 px on each side, quality 75-95:
   a smooth colour field, a few drawn shapes and sensor-like noise, so their sizes (tens of KB) and decode
   costs are those of web photos, not of flat test images. They are served from a loopback HTTP server in
   its own process (asyncio, bytes held in memory, HTTP/1.1 with `Connection: close` as urllib asks), so
   the server costs the same little for every configuration. The URL list is a parquet with uid, url, text.
2. Runs each configuration as a subprocess, in a fresh output folder, with the same processes, threads,
   image size, resize mode (resize only if bigger), shard size, encoding (jpg 95), timeout and sha256:
     img2dataset  `img2dataset.download(...)` itself: output_format="webdataset", input_format="parquet",
                  its multiprocessing distributor;
     before       `curate download` at 4ccb3ce, the last commit before the guards (a detached git worktree,
                  run with this venv's python, `python -m curate.cli download`, PYTHONPATH = that worktree);
     guarded      `curate download --allow-private` at HEAD (also a worktree, so edits in progress in this
                  checkout cannot change it): byte bound, whole-request deadline with its watchdog thread,
                  pixel bound read from the header before OpenCV decodes, img2dataset built in the worker;
     unguarded    HEAD with only the guards switched off (a third worktree whose curate/download/worker.py is
                  patched here: urllib's default opener instead of `guard.install`, img2dataset's Resizer
                  instead of BoundedResizer), so guarded / unguarded is the guards' cost and nothing else of
                  what changed since 4ccb3ce (the worker no longer imports torch, plans on disk, ...);
     guarded-net  (not run by default) `--allow-network 127.0.0.1/32` instead of `--allow-private`, so every
                  connection also runs the address check (resolve, is it public, is it in an allowed
                  network) as it does for a public address on the web.
   A warm-up round on --warmup-rows rows compiles the worktrees' bytecode and warms the page cache; then
   --rounds rounds, the order of the configurations rotated each round. Then, in one process, the cost of
   each guard alone per image (img2dataset's fetch through urllib's and the guarded opener; Resizer and
   BoundedResizer), against the same server (--micro-rows 0 skips it).
3. For each run: wall time of the whole command (interpreter start and imports included); the fetch span
   (first shard's start to last shard's end, from img2dataset's per-shard stats); CPU seconds of the
   process tree (os.wait4: the command and the workers it reaped); peak memory of the process tree as the
   sum of PSS (psutil `memory_full_info().pss`, every 0.2 s; pages shared between processes counted once);
   the success count; and a digest of every written image keyed by uid, which must be equal for all.
4. Prints a markdown section (machine, settings, table, ratios); --write-results puts it into
   benchmarks/RESULTS.md (replacing an earlier version of the same section, others untouched). Every run's
   numbers are kept in WORKDIR/results.json; --report-only renders them again.

Nothing is fetched from anywhere but the loopback server. The worktrees are removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from curate_run_bench import cpu_model, log  # benchmarks/ is on sys.path when a benchmark runs as a script
from treemem import TreeSampler

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Download: guards vs img2dataset alone (issue 16)"
BEFORE_REF = "4ccb3ce"  # the last commit before the guards (946891d adds them)
GENERATOR_VERSION = 1
CONFIGS = ("img2dataset", "before", "guarded", "unguarded", "guarded-net")
DEFAULT_CONFIGS = ("img2dataset", "before", "guarded", "unguarded")

# --------------------------------------------------------------------------------------------------------
# The images and the URL list
# --------------------------------------------------------------------------------------------------------


def _make_image(args: tuple[int, int]) -> tuple[str, int, int, int]:
    """One photo-like JPEG: a smooth colour field, a few shapes, noise. Returns (name, width, height, bytes)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    i, seed = args
    rng = np.random.default_rng([seed, i])
    w, h = (int(x) for x in rng.integers(256, 641, size=2))
    grid = rng.integers(0, 256, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3), dtype=np.uint8)
    img = Image.fromarray(grid, "RGB").resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 9))):
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0, float(rng.uniform(2, 10)), size=(h, w, 1)).astype(np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    name = f"{i:07d}.jpg"
    img.save(WEB_DIR / name, format="JPEG", quality=int(rng.integers(75, 96)))
    return name, w, h, (WEB_DIR / name).stat().st_size


WEB_DIR = Path()


def _init_worker(web_dir: str) -> None:
    global WEB_DIR
    WEB_DIR = Path(web_dir)


def ensure_images(workdir: Path, n: int, seed: int, processes: int) -> tuple[Path, dict]:
    """WORKDIR/web/ holding n JPEGs; regenerated only when the manifest differs."""
    import multiprocessing

    web = workdir / "web"
    manifest_path = workdir / "web_manifest.json"
    want = {"n": n, "seed": seed, "version": GENERATOR_VERSION}
    if manifest_path.exists():
        have = json.loads(manifest_path.read_text())
        if {k: have.get(k) for k in want} == want and len(list(web.glob("*.jpg"))) == n:
            return web, have
    if web.exists():
        shutil.rmtree(web)
    web.mkdir(parents=True)
    log(f"generating {n:,} JPEGs in {web} ...")
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_init_worker, initargs=(str(web),)) as pool:
        made = pool.map(_make_image, [(i, seed) for i in range(n)], chunksize=64)
    sizes = sorted(b for *_, b in made)
    pixels = sorted(w * h for _, w, h, _ in made)
    have = dict(want, bytes_total=sum(sizes), bytes_median=sizes[len(sizes) // 2], bytes_min=sizes[0],
                bytes_max=sizes[-1], pixels_median=pixels[len(pixels) // 2])
    manifest_path.write_text(json.dumps(have, indent=1))
    log(f"generated in {time.perf_counter() - start:.0f} s: {have['bytes_total'] / 2**20:.0f} MiB, "
        f"median {have['bytes_median'] / 1024:.0f} KiB")
    return web, have


def write_url_list(path: Path, n: int, rows: int, base: str, seed: int) -> Path:
    """DataComp's columns: uid (32 hex), url, text; `rows` rows cycling over the n images."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed + 1)
    words = ["a", "photo", "of", "the", "red", "blue", "green", "dog", "cat", "car", "house", "tree", "street", "park",
             "city", "beach", "mountain", "sky"]
    uids = [bytes(rng.integers(0, 256, size=16, dtype=np.uint8)).hex() for _ in range(rows)]
    text = [" ".join(rng.choice(words, size=int(rng.integers(3, 10)))) for _ in range(rows)]
    urls = [f"{base}/img/{i % n:07d}.jpg" for i in range(rows)]
    pq.write_table(pa.table({"uid": uids, "url": urls, "text": text}), path)
    return path


# --------------------------------------------------------------------------------------------------------
# The loopback server (its own process)
# --------------------------------------------------------------------------------------------------------


def serve(web_dir: str) -> None:
    """Serve WEB_DIR/*.jpg under /img/ on 127.0.0.1 (a free port, printed on stdout) until killed."""
    import asyncio

    files = {p.name: p.read_bytes() for p in Path(web_dir).glob("*.jpg")}
    not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].decode("latin-1").split("?", 1)[0] if len(parts) >= 2 else ""
            data = files.get(path[len("/img/"):]) if path.startswith("/img/") else None
            if data is None:
                writer.write(not_found)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n" % len(data))
                writer.write(data)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class LoopbackServer:
    def __init__(self, web_dir: Path):
        self.proc = subprocess.Popen([sys.executable, __file__, "_serve", str(web_dir)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise SystemExit(f"loopback server did not start (said {line!r})")
        self.base = f"http://127.0.0.1:{int(line)}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------------------------------------
# The configurations
# --------------------------------------------------------------------------------------------------------

IMG2DATASET_CODE = """
import json, sys
import img2dataset
if __name__ == "__main__":
    img2dataset.download(**json.loads(sys.argv[1]))
"""


def worktree(ref: str, path: Path) -> str:
    """A detached worktree of `ref` at `path` (replacing one left there); returns its commit."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    if path.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True, check=False)
        if path.exists():
            shutil.rmtree(path)
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=True, capture_output=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True, capture_output=True)
    return commit


# the unguarded worktree: HEAD's worker with the two guard hooks replaced by img2dataset's own behaviour
UNGUARD_PATCH = (
    ("        from curate.download.resize import BoundedResizer\n",
     ("        from img2dataset.resizer import Resizer\n\n"
     "        class BoundedResizer(Resizer):  # benchmark patch: no header read\n"
     "            def __init__(self, *args, max_pixels, **kwargs):\n"
     "                super().__init__(*args, max_image_area=max_pixels, **kwargs)\n")),
    ("        guard.install(o.limits)\n",
     ("        import urllib.request  # benchmark patch: urllib's default opener, as img2dataset alone\n"
     "        urllib.request.install_opener(urllib.request.build_opener())\n")),
)


def unguard(tree: Path) -> None:
    worker = tree / "curate" / "download" / "worker.py"
    src = worker.read_text()
    for old, new in UNGUARD_PATCH:
        if src.count(old) != 1:
            raise SystemExit(f"cannot switch the guards off in {worker}: {old.strip()!r} not found once "
                             "(the worker changed; update UNGUARD_PATCH or leave `unguarded` out of --configs)")
        src = src.replace(old, new)
    worker.write_text(src)


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True, check=False)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True, check=False)


def command(config: str, url_list: Path, out: Path, args, trees: dict[str, Path]) -> tuple[list[str], Path, dict]:
    """(argv, cwd, env) of one run; `out` is the output folder (img2dataset) or the pool (curate)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations (imported by img2dataset) phones home otherwise
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the worktrees' bytecode is compiled once (warm-up), as installed code is
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)  # the loopback server directly, for every configuration
    if config == "img2dataset":
        params = {
            "url_list": str(url_list), "output_folder": str(out), "processes_count": args.processes,
            "thread_count": args.threads, "image_size": args.image_size, "resize_mode": args.resize_mode,
            "resize_only_if_bigger": True, "encode_format": "jpg", "encode_quality": 95, "output_format": "webdataset",
            "input_format": "parquet", "url_col": "url", "caption_col": "text", "save_additional_columns": ["uid"],
            "number_sample_per_shard": args.shard_size, "distributor": "multiprocessing", "compute_hash": "sha256",
            "extract_exif": False, "timeout": 10, "retries": 0, "enable_wandb": False,
        }
        return [sys.executable, "-c", IMG2DATASET_CODE, json.dumps(params)], REPO, env
    tree = trees[{"before": "before", "unguarded": "unguarded"}.get(config, "guarded")]
    env["PYTHONPATH"] = str(tree)
    argv = [sys.executable, "-m", "curate.cli", "download", "--url-list", str(url_list), "--pool", str(out),
            "--processes", str(args.processes), "--threads", str(args.threads), "--image-size", str(args.image_size),
            "--resize-mode", args.resize_mode, "--shard-size", str(args.shard_size), "--timeout", "10"]
    if config in ("guarded", "unguarded"):
        argv.append("--allow-private")
    elif config == "guarded-net":
        argv += ["--allow-network", "127.0.0.1/32"]
    return argv, tree, env


# Where a guarded image's extra time would go: each guard alone, in one process, against the same server.
# img2dataset's own download_image (urlopen + read, its User-Agent) under urllib's default opener and under
# the guarded opener; img2dataset's Resizer and BoundedResizer (header read first) on the same bytes.
MICRO_CODE = """
import io, json, os, sys, time, urllib.request
from multiprocessing.pool import ThreadPool
base, n, rounds, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
from img2dataset.downloader import download_image
from img2dataset.resizer import Resizer
from curate.download import guard
from curate.download.resize import BoundedResizer
from curate.download.worker import FetchOptions  # noqa: F401 (HEAD's worker module, to be sure which code this is)

rows = [(i, f"{base}/img/{i:07d}.jpg") for i in range(n)]
openers = {
    "urllib": lambda: urllib.request.build_opener(),
    "guarded --allow-private": lambda: guard.build_opener(guard.FetchLimits(deadline=30.0, allow_private=True)),
    "guarded --allow-network": lambda: guard.build_opener(guard.FetchLimits(deadline=30.0, allow_networks=("127.0.0.1/32",))),
}

def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - w) / n, (time.process_time() - c) / n

def one(r):
    return download_image(r, 10, None, ["noai", "noimageai", "noindex", "noimageindex"])

fetch = {k: {m: {"wall": [], "cpu": []} for m in ("1", str(threads))} for k in openers}
names = list(openers)
for rnd in range(rounds):
    for name in names[rnd % len(names):] + names[:rnd % len(names)]:
        urllib.request.install_opener(openers[name]())
        got, w, c = timed(lambda: [one(r) for r in rows])
        fetch[name]["1"]["wall"].append(w); fetch[name]["1"]["cpu"].append(c)
        assert all(img is not None for _, img, _ in got), [e for _, img, e in got if img is None][:3]
        with ThreadPool(threads) as pool:
            got, w, c = timed(lambda: list(pool.imap_unordered(one, rows)))
        fetch[name][str(threads)]["wall"].append(w); fetch[name][str(threads)]["cpu"].append(c)
        assert all(img is not None for _, img, _ in got)
datas = [img.getvalue() for _, img, _ in got]
kw = dict(image_size=512, resize_mode="keep_ratio_largest", resize_only_if_bigger=True, encode_format="jpg",
          encode_quality=95, min_image_size=0, max_aspect_ratio=float("inf"))
resizers = {"Resizer": Resizer(max_image_area=89_478_485, **kw), "BoundedResizer": BoundedResizer(max_pixels=89_478_485, **kw)}
resize = {k: {"wall": [], "cpu": []} for k in resizers}
names = list(resizers)
for rnd in range(rounds):
    for name in names[rnd % 2:] + names[:rnd % 2]:
        rz = resizers[name]
        _, w, c = timed(lambda: [rz(io.BytesIO(d)) for d in datas])
        resize[name]["wall"].append(w); resize[name]["cpu"].append(c)
best = lambda d: {k: min(v) for k, v in d.items()}
print(json.dumps({"fetch": {k: {m: best(v) for m, v in x.items()} for k, x in fetch.items()},
                  "resize": {k: best(v) for k, v in resize.items()}, "n": n, "rounds": rounds, "threads": threads}))
"""


def micro(base: str, tree: Path, n: int, rounds: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "http_proxy", "HTTP_PROXY")}
    env.update(PYTHONPATH=str(tree), NO_ALBUMENTATIONS_UPDATE="1", OPENCV_IO_MAX_IMAGE_PIXELS="89478485")
    out = subprocess.run([sys.executable, "-c", MICRO_CODE, base, str(n), str(rounds), str(threads)], cwd=tree, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"per-request measurement failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------
# Measuring one run
# --------------------------------------------------------------------------------------------------------


def shard_outcomes(folder: Path) -> dict:
    """Counts and fetch span from img2dataset's per-shard stats files."""
    stats = [json.loads(p.read_text()) for p in sorted(folder.glob("*_stats.json"))]
    return {
        "shards": len(stats),
        "success": sum(int(s.get("successes", 0)) for s in stats),
        "failed_to_download": sum(int(s.get("failed_to_download", 0)) for s in stats),
        "failed_to_resize": sum(int(s.get("failed_to_resize", 0)) for s in stats),
        "span_s": (max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)) if stats else float("nan"),
    }


def images_digest(folder: Path) -> str:
    """sha256 over (uid, sha256 of the written image) for every sample in the tars, sorted by uid."""
    pairs = []
    for tar_path in sorted(folder.glob("*.tar")):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.isfile():
                    key, _, ext = m.name.partition(".")
                    members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for parts in members.values():
            if "jpg" in parts and "json" in parts:
                pairs.append(f"{json.loads(parts['json'])['uid']}:{hashlib.sha256(parts['jpg']).hexdigest()}")
    return hashlib.sha256("\n".join(sorted(pairs)).encode()).hexdigest()


def run_one(config: str, url_list: Path, run_dir: Path, args, trees: dict[str, Path], keep: bool = False) -> dict:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    out = run_dir / "out"
    argv, cwd, env = command(config, url_list, out, args, trees)
    log_path = run_dir / "log.txt"
    with open(log_path, "w") as logf:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{config} failed (exit {proc.returncode}): {' '.join(argv[:4])} ...\n"
                         f"--- {log_path} ---\n{log_path.read_text()[-4000:]}")
    shards = out / "shards" if config != "img2dataset" else out
    result = {"config": config, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
              "pss_mb": sampler.peak_pss / 2**20, "processes": sampler.max_procs, **shard_outcomes(shards),
              "digest": images_digest(shards)}
    if config != "img2dataset":
        summary = json.loads((out / "download_stats.json").read_text())
        result["curate_success"] = summary["success"]
        result["reconciled"] = summary["reconciled"]
        # which code ran: the guarded layout keeps plans on disk, the old one one input.parquet
        result["layout"] = "plans" if (out / "_download" / "plans").exists() else "input.parquet"
    if not keep:
        shutil.rmtree(run_dir)
    return result


# --------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return ""
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def machine_line() -> str:
    import psutil

    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip() or str(os.cpu_count())
    return (f"`nproc` {nproc}, `{cpu_model()}` ({cpu_flags()}), "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Linux {platform.release()}")


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("img2dataset", "opencv-python-headless", "pillow")
                     if _has(name)) + f", Python {platform.python_version()}"


def _has(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


LABELS = {
    "unguarded": "`curate download`, HEAD with the guards switched off ({head})",
    "img2dataset": "img2dataset alone (`img2dataset.download`)",
    "before": "`curate download` before the guards ({before})",
    "guarded": "`curate download --allow-private`, guarded ({head})",
    "guarded-net": "`curate download --allow-network 127.0.0.1/32`, guarded, address check on ({head})",
}


def summarize(results: list[dict], configs: list[str]) -> dict[str, dict]:
    out = {}
    for c in configs:
        runs = [r for r in results if r["config"] == c]
        wall = statistics.median(r["wall_s"] for r in runs)
        out[c] = {
            "runs": runs,
            "wall_s": wall,
            "rate": statistics.median(r["success"] / r["wall_s"] for r in runs),
            "span_s": statistics.median(r["span_s"] for r in runs),
            "span_rate": statistics.median(r["success"] / r["span_s"] for r in runs),
            "best_wall_s": min(r["wall_s"] for r in runs),
            "best_rate": max(r["success"] / r["wall_s"] for r in runs),
            "best_span_s": min(r["span_s"] for r in runs),
            "best_span_rate": max(r["success"] / r["span_s"] for r in runs),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "pss_mb": statistics.median(r["pss_mb"] for r in runs),
            "pss_max_mb": max(r["pss_mb"] for r in runs),
            "processes": max(r["processes"] for r in runs),
            "success": sorted({r["success"] for r in runs}),
            "digests": {r["digest"] for r in runs},
        }
    return out


def _wrap(text: str, bullet: bool = False) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=110, initial_indent="- " if bullet else "", subsequent_indent="  " if bullet else "",
                         break_on_hyphens=False, break_long_words=False)


def report(args, results: list[dict], configs: list[str], meta: dict) -> str:
    s = summarize(results, configs)
    labels = {c: LABELS[c].format(before=f"`{meta['before'][:7]}`", head=f"`{meta['head'][:7]}`") for c in configs}
    digests = set().union(*(s[c]["digests"] for c in configs))
    successes = set().union(*(set(s[c]["success"]) for c in configs))
    img = meta["images"]
    lines = [f"{SECTION} (`benchmarks/download_bench.py`, {meta['date']:%Y-%m-%d})", "", f"`{meta['argv']}`", ""]
    lines += _wrap(
        f"{args.n:,} generated JPEGs (256–640 px a side, quality 75–95, {img['bytes_total'] / 2**20:.0f} MiB, median "
        f"{img['bytes_median'] / 1024:.0f} KiB) served from a loopback asyncio server in its own process; the same "
        f"parquet URL list (uid, url, text) for every run. Every run: {args.processes} processes × {args.threads} "
        f"threads, `--image-size {args.image_size}`, `{args.resize_mode}`, resize only if bigger, jpg quality 95, "
        f"shards of {args.shard_size:,}, timeout 10 s, sha256, no EXIF, a fresh output folder. {args.rounds} rounds "
        f"after a warm-up round of {args.warmup_rows} rows, the order rotated each round. Machine: {meta['machine']}; "
        f"{meta['versions']}. Load average {meta['load_before']} before and {meta['load_after']} after: other "
        f"engineers' test suites shared the 2 cores, so single runs vary by tens of percent.")
    lines.append("")
    lines += _wrap(
        "img2dataset alone is `img2dataset.download(...)` (webdataset, parquet input, its multiprocessing "
        "distributor). `before` is `python -m curate.cli download` at 4ccb3ce (a git worktree, this venv), the last "
        "commit before the guards; `guarded` is HEAD with `--allow-private` (the loopback server is private; the "
        "byte bound, the whole-request deadline and its watchdog thread, the http-only redirects and the header "
        "pixel bound all run; `--allow-private` skips only the address comparison, which the per-image table below "
        "times). `unguarded` is HEAD with only the guards switched off (its worker patched to install urllib's "
        "default opener and use img2dataset's `Resizer`), so guarded / unguarded is what the guards cost, apart "
        "from everything else that changed since 4ccb3ce (the download worker no longer imports torch, plans on "
        "disk).")
    lines.append("")
    lines += _wrap(
        "Wall = the whole command (interpreter start and imports included); fetch span = first shard's start to last "
        "shard's end (img2dataset's per-shard stats: fetch, decode, resize, encode, write); start-up + end = wall − "
        "span; CPU = user + system of the process tree (os.wait4); memory = peak sum of PSS over the process tree "
        "(psutil, every 0.2 s; shared pages counted once). Wall, images/s and the span's: the median of the rounds, "
        "the best round in brackets; the others: medians.")
    lines += [
        "",
        ("| configuration | wall s | images/s | fetch span s | images/s in span "
         "| start-up + end s | CPU s | peak MB (tree PSS) | success | wall per round |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in configs:
        x = s[c]
        lines.append(
            f"| {labels[c]} | {x['wall_s']:.1f} ({x['best_wall_s']:.1f}) | {x['rate']:.0f} ({x['best_rate']:.0f}) | "
            f"{x['span_s']:.1f} ({x['best_span_s']:.1f}) | {x['span_rate']:.0f} ({x['best_span_rate']:.0f}) | "
            f"{statistics.median(r['wall_s'] - r['span_s'] for r in x['runs']):.1f} | {x['cpu_s']:.0f} | "
            f"{x['pss_mb']:,.0f} | {'/'.join(format(v, ',') for v in x['success'])} | "
            f"{', '.join(format(r['wall_s'], '.1f') for r in x['runs'])} |")
    lines.append("")
    lines += _wrap("Ratios (images/s: above 1 is faster; CPU and memory: below 1 is less), of medians and, after the "
                   "slash, of best rounds (the least disturbed by the other jobs):")
    for c, ref in (("guarded", "img2dataset"), ("guarded", "before"), ("guarded", "unguarded"),
                   ("guarded-net", "img2dataset"), ("guarded-net", "unguarded"), ("unguarded", "img2dataset"),
                   ("before", "img2dataset")):
        if c in s and ref in s:
            a, b = s[c], s[ref]
            lines += _wrap(
                f"**{c} / {ref}**: images/s {a['rate'] / b['rate']:.2f}× / {a['best_rate'] / b['best_rate']:.2f}×, "
                f"images/s in the fetch span {a['span_rate'] / b['span_rate']:.2f}× / "
                f"{a['best_span_rate'] / b['best_span_rate']:.2f}×, CPU {a['cpu_s'] / b['cpu_s']:.2f}×, "
                f"peak PSS {a['pss_mb'] / b['pss_mb']:.2f}×", bullet=True)
    counts = ", ".join(c + " " + "/".join(format(v, ",") for v in s[c]["success"]) for c in configs)
    lines += _wrap(
        f"Success counts: {counts} ({'equal' if len(successes) == 1 else 'NOT EQUAL'}); the written images (uid → "
        f"sha256 of the jpg) are {'identical in every run' if len(digests) == 1 else 'NOT identical across runs'}.",
        bullet=True)
    if "img2dataset" in s and "guarded" in s:
        g, i = s["guarded"], s["img2dataset"]
        whole, span = g["rate"] / i["rate"], g["span_rate"] / i["span_rate"]
        whole_best, span_best = g["best_rate"] / i["best_rate"], g["best_span_rate"] / i["best_span_rate"]

        def met(x: float) -> str:
            return "met" if x >= 0.9 else "NOT met"

        lines += _wrap(
            f"Target (guarded `curate download` within 10% of img2dataset alone, images/s): whole command "
            f"{whole:.2f}× / {whole_best:.2f}×, **{met(min(whole, whole_best))}**; fetch span alone {span:.2f}× / "
            f"{span_best:.2f}×, **{met(min(span, span_best))}**.", bullet=True)
    if "micro" in meta:
        lines += ["", *micro_table(meta["micro"])]
    return "\n".join(lines) + "\n"


def micro_table(m: dict) -> list[str]:
    f, r, t = m["fetch"], m["resize"], str(m["threads"])
    names = ("urllib", "guarded --allow-private", "guarded --allow-network")

    def cells(mode: str, kind: str) -> str:
        base = f["urllib"][mode][kind]
        out = [f"{base * 1e6:.0f}"]
        for name in names[1:]:
            v = f[name][mode][kind]
            out.append(f"{v * 1e6:.0f} ({(v - base) * 1e6:+.0f})")
        return " | ".join(out)

    return _wrap(
        f"Where a guarded image's time goes, each guard alone (`MICRO_CODE`: one process, HEAD's code, the same "
        f"{m['n']:,} images from the same server, best of {m['rounds']} rotated rounds; CPU = this process's, "
        f"the server's not included): img2dataset's own `download_image` under urllib's default opener (img2dataset "
        f"alone; `before` only overrides the redirect handler) and under the guarded opener (deadline 30 s, so its "
        f"watchdog thread runs); img2dataset's `Resizer` and `BoundedResizer` (header read first) on the fetched bytes.") + [
        "",
        "| µs per image | urllib | guarded `--allow-private` | guarded `--allow-network 127.0.0.1/32` |",
        "|---|---:|---:|---:|",
        f"| fetch, 1 thread, CPU | {cells('1', 'cpu')} |",
        f"| fetch, 1 thread, wall | {cells('1', 'wall')} |",
        f"| fetch, {t} threads, CPU | {cells(t, 'cpu')} |",
        f"| fetch, {t} threads, wall | {cells(t, 'wall')} |",
        "",
        "| µs per image | `Resizer` (img2dataset) | `BoundedResizer` (guarded) |",
        "|---|---:|---:|",
        (f"| resize + encode, CPU | {r['Resizer']['cpu'] * 1e6:.0f} | {r['BoundedResizer']['cpu'] * 1e6:.0f} "
        f"({(r['BoundedResizer']['cpu'] - r['Resizer']['cpu']) * 1e6:+.0f}) |"),
        (f"| resize + encode, wall | {r['Resizer']['wall'] * 1e6:.0f} | {r['BoundedResizer']['wall'] * 1e6:.0f} "
        f"({(r['BoundedResizer']['wall'] - r['Resizer']['wall']) * 1e6:+.0f}) |"),
    ]


def write_section(text: str) -> None:
    """Replace this benchmark's section in RESULTS.md (header to the next `## `), or append it."""
    old = RESULTS.read_text()
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(SECTION)), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + rest if rest else "")
    RESULTS.write_text(new)


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="images (and URL list rows)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup-rows", type=int, default=300)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=64)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--resize-mode", default="keep_ratio_largest")
    p.add_argument("--shard-size", type=int, default=None,
                   help="samples per shard (default: n / (2 x processes), two shards a process: no idle tail, and "
                        "no img2dataset worker reaches its maxtasksperchild=5 and is respawned mid-run)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--before-ref", default=BEFORE_REF)
    p.add_argument("--guarded-ref", default="HEAD")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/download_bench"))
    p.add_argument("--before-tree", type=Path, default=Path("/tmp/dl_before"))
    p.add_argument("--guarded-tree", type=Path, default=Path("/tmp/dl_guarded"))
    p.add_argument("--unguarded-tree", type=Path, default=Path("/tmp/dl_unguarded"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--micro-rows", type=int, default=1000, help="images for the per-request costs (0: skip them)")
    p.add_argument("--micro-rounds", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the output folders and worktrees")
    p.add_argument("--write-results", action="store_true", help=f"write the section into {RESULTS.relative_to(REPO)}")
    p.add_argument("--report-only", action="store_true", help="render WORKDIR/results.json of an earlier run again")
    args = p.parse_args(argv)
    if args.report_only:
        saved = json.loads((args.workdir / "results.json").read_text())
        meta = dict(saved["meta"], date=dt.datetime.fromisoformat(saved["meta"]["date"]))
        text = report(argparse.Namespace(**saved["args"]), saved["runs"], saved["configs"], meta)
        print(text)
        if args.write_results:
            write_section(text)
            log(f"wrote the section into {RESULTS}")
        return 0
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if args.shard_size is None:
        args.shard_size = -(-args.n // (2 * args.processes))
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configs {sorted(unknown)}")

    started = dt.datetime.now(dt.timezone.utc)
    args.workdir.mkdir(parents=True, exist_ok=True)
    web, images = ensure_images(args.workdir, args.n, args.seed, os.cpu_count() or 1)
    trees = {"before": args.before_tree, "guarded": args.guarded_tree, "unguarded": args.unguarded_tree}
    meta = {"date": started, "machine": machine_line(), "versions": versions(),
            "argv": " ".join([".venv/bin/python benchmarks/download_bench.py", *(argv if argv is not None else sys.argv[1:])]),
            "images": images}
    meta["before"] = worktree(args.before_ref, trees["before"])
    meta["head"] = worktree(args.guarded_ref, trees["guarded"])
    if "unguarded" in configs:
        worktree(meta["head"], trees["unguarded"])
        unguard(trees["unguarded"])
    log(f"before = {meta['before'][:10]} in {trees['before']}, guarded = {meta['head'][:10]} in {trees['guarded']}")
    server = LoopbackServer(web)
    results: list[dict] = []
    try:
        url_list = write_url_list(args.workdir / "urls.parquet", args.n, args.n, server.base, args.seed)
        warm_list = write_url_list(args.workdir / "urls_warmup.parquet", args.n, min(args.warmup_rows, args.n),
                                   server.base, args.seed + 7)
        meta["load_before"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        for c in configs:
            r = run_one(c, warm_list, args.workdir / "runs" / f"warmup-{c}", args, trees)
            log(f"warm-up {c}: {r['wall_s']:.1f} s, {r['success']} of {min(args.warmup_rows, args.n)}")
        for rnd in range(args.rounds):
            order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
            for c in order:
                r = run_one(c, url_list, args.workdir / "runs" / f"{c}-{rnd}", args, trees, keep=args.keep)
                r["round"] = rnd
                results.append(r)
                log(f"round {rnd} {c}: {r['wall_s']:.1f} s wall, span {r['span_s']:.1f} s, CPU {r['cpu_s']:.0f} s, "
                    f"{r['success']:,} ok ({r['success'] / r['wall_s']:.0f}/s), PSS {r['pss_mb']:,.0f} MB, "
                    f"{r['processes']} processes" + (f", layout {r['layout']}" if "layout" in r else ""))
        meta["load_after"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        if args.micro_rows:
            log("per-request costs, one process ...")
            meta["micro"] = micro(server.base, trees["guarded"], min(args.micro_rows, args.n), args.micro_rounds, args.threads)
            log(f"per-request costs: {json.dumps(meta['micro'])}")
    finally:
        server.close()
        if not args.keep:
            for tree in trees.values():
                if tree.exists():
                    remove_worktree(tree)
    saved = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "configs": configs,
             "meta": dict(meta, date=meta["date"].isoformat()), "runs": results}
    (args.workdir / "results.json").write_text(json.dumps(saved, indent=1))
    for r in results:
        if r["config"] == "before" and r.get("layout") != "input.parquet":
            raise SystemExit("the `before` runs did not run the worktree's code (no input.parquet layout)")
        if r["config"] in ("guarded", "guarded-net", "unguarded") and r.get("layout") != "plans":
            raise SystemExit("the guarded runs did not run HEAD's code (no plans layout)")
    text = report(args, results, configs, meta)
    print(text)
    if args.write_results:
        write_section(text)
        log(f"wrote the section into {RESULTS}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "_serve":
        serve(sys.argv[2])
    else:
        sys.exit(main())
