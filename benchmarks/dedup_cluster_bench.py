"""`curate dedup` (phash at D=4 and D=8, semantic) and `curate decontaminate` on the local engine, a Dask
LocalCluster (2 workers x 1 thread) and Spark local[2], on generated pools; outputs compared across engines.

    .venv/bin/python benchmarks/dedup_cluster_bench.py [--hashes 1000000] [--files 16] [--distances 4 8]
        [--semantic-rows 200000] [--dim 512] [--eval-images 2000] [--engines local dask spark] [--work DIR]

Pools (written once under --work, reused if present):
- `phash/`: --hashes rows in --files metadata partitions and phash column files; random 64-bit hashes with 5%
  planted near-copies (benchmarks/dedup_bench.py's generator, copies within 4 bits of their root), and
  copies of 1% of the eval images' hashes (1-3 bits away) for decontamination;
- `semantic/`: --semantic-rows rows of --dim-wide float16 image embeddings (DataComp's .npz beside each
  metadata parquet), random directions with 5% planted near-copies (cosine ~0.99), random phash columns;
- `evals/`: --eval-images smooth generated PNGs in two eval sets, and eval embeddings copying 5% of the
  semantic pool's rows.

Dask runs on a LocalCluster the measurement starts with --dask-memory-limit per worker (default 5GB; workers
spill to disk past 60-70% of it), passed to the command as --dask-scheduler; Spark is the command's own
`local[2]` session (driver memory 4g, CURATE_SPARK_DRIVER_MEMORY).

Each measurement is one `curate ...` command line run in its own subprocess (`curate.cli.main`, so the
engine's start-up is inside "wall"; "job" is the command's own `seconds` statistic, engine start excluded).
Memory: "driver" is the peak RSS of that Python process (VmHWM); "all" is the peak of the summed RSS of
it and every descendant (Dask nannies and workers; Spark's JVM, which in local mode is also the executor,
and its Python workers), sampled every 0.2 s, so short spikes can be missed. "output" is a digest of every
output file's values (uid, group, keep / uid, contaminated, and the report) compared with the local engine's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from treemem import TreeSampler  # benchmarks/ is on sys.path when a benchmark runs as a script

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


# --- pools --------------------------------------------------------------------------------------------------


def _smooth_png(rng: np.random.Generator) -> bytes:
    """A smooth 64x64 gradient image (its pHash survives re-encoding), different per draw."""
    import io

    from PIL import Image

    y, x = np.mgrid[0:64, 0:64]
    a, b, c, d = rng.uniform(-3, 3, 4)
    img = (127 + 60 * np.sin(a * x / 20 + b * y / 20 + c) + 40 * np.cos(d * x / 13 - c * y / 17)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_evals(root: Path, n: int, seed: int = 0) -> None:
    import tarfile
    from io import BytesIO

    rng = np.random.default_rng(seed)
    for name, count in (("cifar10", n // 2), ("vtab-dtd", n - n // 2)):
        d = root / f"wds_{name}_test" / "test"
        d.mkdir(parents=True)
        (d / "nshards.txt").write_text("1\n")
        (d.parent / "classnames.txt").write_text("a\nb\n")
        with tarfile.open(d / "0.tar", "w") as tar:
            for k in range(count):
                for ext, data in (("png", _smooth_png(rng)), ("cls", b"0")):
                    info = tarfile.TarInfo(f"s{k:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, BytesIO(data))


def _write_partitions(root: Path, n: int, files: int, seed: int, phash: list[str]) -> list[tuple[int, int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.demo.metadata import generate_metadata

    meta = generate_metadata(n, seed=seed)
    (root / "metadata").mkdir(parents=True)
    (root / "columns" / "phash").mkdir(parents=True)
    bounds = np.linspace(0, n, files + 1).astype(int)
    spans = []
    for f in range(files):
        a, b = int(bounds[f]), int(bounds[f + 1])
        part = meta.slice(a, b - a)
        pq.write_table(part, root / "metadata" / f"{f:08d}.parquet")
        pq.write_table(pa.table({"uid": part.column("uid"), "phash": pa.array(phash[a:b], pa.string()),
                                 "status": pa.array(["ok"] * (b - a), pa.string())}), root / "columns" / "phash" / f"{f:08d}.parquet")
        spans.append((a, b))
    return spans


def write_phash_pool(root: Path, n: int, files: int, eval_hashes: np.ndarray, seed: int = 0) -> None:
    from dedup_bench import generate

    values, _, _ = generate(n, 8, seed=seed)
    rng = np.random.default_rng(seed + 1)
    planted = rng.choice(n, len(eval_hashes) // 100, replace=False)  # 1% of the eval images copied into the pool
    flips = rng.integers(1, 4, len(planted))
    values[planted] = eval_hashes[: len(planted)] ^ ((np.uint64(1) << flips.astype(np.uint64)) - np.uint64(1))
    _write_partitions(root, n, files, seed, [f"{int(v):016x}" for v in values])


def write_semantic_pool(root: Path, evals: Path, n: int, dim: int, files: int, n_eval: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    copies = rng.choice(n, n // 20, replace=False)
    roots = rng.integers(0, n, len(copies))
    # cosine ~0.99 to the root (noise of norm ~0.14 against a root of norm ~sqrt(dim)), far from 1 - eps = 0.95
    emb[copies] = emb[roots] + rng.normal(scale=0.14, size=(len(copies), dim))
    spans = _write_partitions(root, n, files, seed, [f"{int(v):016x}" for v in rng.integers(0, 2**64, n, dtype=np.uint64)])
    for f, (a, b) in enumerate(spans):
        np.savez(root / "metadata" / f"{f:08d}.npz", l14_img=emb[a:b].astype(np.float16))
    # eval embeddings: 5% near copies of pool rows, the rest random
    k = n_eval // 20
    q = np.concatenate([emb[rng.choice(n, k, replace=False)] + rng.normal(scale=0.14, size=(k, dim)),
                        rng.normal(size=(n_eval - k, dim))]).astype(np.float32)
    np.savez(evals.parent / "eval_emb.npz", embeddings=q, eval_set=np.array(["cars"] * n_eval),
             eval_key=np.array([f"e{i}" for i in range(n_eval)]))


def prepare(work: Path, args) -> None:
    from curate.decontaminate import hash_eval_sets

    evals = work / "evals"
    if not evals.exists():
        t = time.perf_counter()
        write_evals(evals, args.eval_images)
        print(f"# wrote {args.eval_images} eval images in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if not (work / "phash").exists():
        t = time.perf_counter()
        table, _ = hash_eval_sets(evals)
        write_phash_pool(work / "phash", args.hashes, args.files, table.column("phash").to_numpy().view(np.uint64))
        print(f"# wrote the phash pool in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if not (work / "semantic").exists():
        t = time.perf_counter()
        write_semantic_pool(work / "semantic", evals, args.semantic_rows, args.dim, args.files, args.eval_images)
        print(f"# wrote the semantic pool in {time.perf_counter() - t:.1f} s", file=sys.stderr)


# --- one measurement (child process) ------------------------------------------------------------------------


def _digest(files: list[Path], columns: list[str]) -> str:
    """sha256 of every value (and null) of `columns` in `files`, in order."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        t = pq.read_table(f)
        for c in columns:
            col = t.column(c).combine_chunks() if t.num_rows else pa.array([], t.schema.field(c).type)
            h.update(c.encode())
            h.update(np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool).tobytes())
            if pa.types.is_string(col.type):
                h.update("\x00".join(x or "" for x in col.to_pylist()).encode())
            else:
                filled = pc.fill_null(col, pa.scalar(False if pa.types.is_boolean(col.type) else 0, col.type))
                h.update(np.asarray(filled.to_numpy(zero_copy_only=False)).tobytes())
    return h.hexdigest()[:16]


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child forked from
    the (large) benchmark process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SEARCH_STATS = ("plan", "pairs_of_distinct_hashes", "component_rounds")


def one(job: str, engine: str, pool: Path, evals: Path, d: int, dask_memory: str) -> dict:
    from curate.cli import main as curate_main

    common = ["--engine", engine, "--processes", "2"]
    cluster = None
    if engine == "dask" and dask_memory != "auto":
        # the engine's own LocalCluster, but with a memory limit per worker (Dask's default is RAM / workers,
        # which on a shared 24 GB machine lets two workers take it all before they spill)
        import logging

        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=dask_memory,
                               dashboard_address=None, silence_logs=logging.ERROR)
        common = ["--engine", "dask", "--dask-scheduler", cluster.scheduler_address]
    if job == "phash":
        argv = ["dedup", "--pool", str(pool), "--method", "phash", "--max-distance", str(d), *common]
        stats_file, out = pool / "columns" / "dedup_phash_stats.json", pool / "columns" / "dedup_phash"
    elif job == "semantic":
        argv = ["dedup", "--pool", str(pool), "--method", "semantic", *common]
        stats_file, out = pool / "columns" / "dedup_semantic_stats.json", pool / "columns" / "dedup_semantic"
    else:
        argv = ["decontaminate", "--pool", str(pool), "--eval-dir", str(evals), "--max-distance", str(d), *common]
        if job == "decontam-cosine":
            argv += ["--eval-embeddings", str(evals.parent / "eval_emb.npz"), "--min-cosine", "0.95"]
        stats_file, out = pool / "columns" / "decontam_stats.json", pool / "columns" / "decontam"
    sampler = TreeSampler(pss_every=0)  # this process and its workers, RSS
    sampler.start()
    t0 = time.perf_counter()
    rc = curate_main(argv)
    wall = time.perf_counter() - t0
    sampler.stop()
    if cluster is not None:
        cluster.close()
    if rc:
        raise SystemExit(f"{argv} exited {rc}")
    stats = json.loads(stats_file.read_text())
    files = sorted(out.glob("*.parquet"))
    if job.startswith("decontam"):
        digest = _digest(files, ["uid", "contaminated"]) + _digest([pool / "decontamination_report.parquet"],
                                                                  ["pool_uid", "eval_set", "eval_key", "method", "distance", "cosine"])
        summary = f"{stats['contaminated']:,} contaminated ({stats['phash_matches']:,} pHash, {stats['cosine_matches']:,} cosine matches)"
    else:
        method = "semantic" if job == "semantic" else "phash"
        digest = _digest(files, ["uid", f"dedup_{method}_group", f"dedup_{method}_keep"])
        summary = (f"{stats['groups_with_duplicates']:,} groups with duplicates, remove {stats['removed_as_duplicates']:,}"
                   + (f"; {stats.get('clusters')} clusters, k-means sample {stats.get('kmeans_sample'):,}" if job == "semantic" else ""))
    search = {**{k: stats[k] for k in SEARCH_STATS if k in stats}, **stats.get("block_search", {})}  # Dask/Spark pHash search
    return {"wall": wall, "job": stats["seconds"], "driver_mib": _peak_rss_mib(),
            "all_mib": sampler.peak_rss / 2**20, "digest": digest, "summary": summary, "files": len(files), "search": search}


def run_child(job, engine, pool, evals, d, timeout, dask_memory):
    cmd = [sys.executable, __file__, "--one", job, engine, str(pool), str(evals), str(d), dask_memory]
    # its own process group, so a timeout also ends the cluster it started (Dask workers, Spark's JVM)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"over {timeout} s"}
    if proc.returncode:
        lines = [x for x in stderr.strip().splitlines() if x.strip()]
        return {"error": f"exit {proc.returncode}: " + (lines[-1][:200] if lines else "?")}
    return json.loads(stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hashes", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--distances", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--semantic-rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--engines", nargs="+", default=["local", "dask", "spark"])
    ap.add_argument("--jobs", nargs="+", default=["phash", "semantic", "decontam", "decontam-cosine"])
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per measurement")
    ap.add_argument("--work", default=str(HERE / "_work" / "dedup_cluster"))
    ap.add_argument("--dask-memory-limit", default="5GB", help="per Dask worker ('auto': Dask's default, RAM / workers)")
    ap.add_argument("--one", nargs=6, default=None)
    args = ap.parse_args()
    if args.one:
        job, engine, pool, evals, d, dask_memory = args.one
        print(json.dumps(one(job, engine, Path(pool), Path(evals), int(d), dask_memory)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prepare(work, args)
    import faiss

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
          f"python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}; load average at start "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| job | engine | wall incl. engine start (s) | job (s) | driver peak RSS (MiB) | all processes peak RSS (MiB) | output | result |")
    print("|---|---|---|---|---|---|---|---|")
    sys.stdout.flush()
    plan = []
    for job in args.jobs:
        if job == "phash":
            plan += [(f"phash D={d}, {args.hashes:,} hashes", "phash", work / "phash", d) for d in args.distances]
        elif job == "semantic":
            plan.append((f"semantic eps=0.05, {args.semantic_rows:,} x {args.dim}", "semantic", work / "semantic", 0))
        elif job == "decontam":
            plan.append((f"decontaminate D=8, {args.hashes:,} pool vs {args.eval_images:,} eval images", "decontam", work / "phash", 8))
        else:
            plan.append((f"decontaminate D=4 + cosine >= 0.95, {args.semantic_rows:,} pool vs {args.eval_images:,} eval",
                         "decontam-cosine", work / "semantic", 4))
    for label, job, pool, d in plan:
        ref = None
        for engine in args.engines:
            r = run_child(job, engine, pool, work / "evals", d, args.timeout, args.dask_memory_limit)
            if "error" in r:
                print(f"| {label} | {engine} | failed: {r['error']} | | | | | |")
            else:
                ref = ref or r["digest"]
                same = "reference" if r["digest"] == ref and engine == args.engines[0] else ("identical" if r["digest"] == ref else "DIFFERENT")
                print(f"| {label} | {engine} | {r['wall']:.1f} | {r['job']:.1f} | {r['driver_mib']:,.0f} | {r['all_mib']:,.0f} | "
                      f"{same} ({r['digest']}) | {r['summary']} |")
            sys.stdout.flush()
    print(f"load average at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
