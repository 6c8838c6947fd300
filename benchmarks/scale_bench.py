"""How cost grows with the pool: `curate run` and pHash dedup at three sizes each, wall time and the peak memory
of the driver and of every worker process, with fitted growth exponents.

    .venv/bin/python benchmarks/scale_bench.py run [--rows 1280000 12800000 128000000] [--jobs clip_score basic]
    .venv/bin/python benchmarks/scale_bench.py dedup [--hashes 1000000 10000000] [--engines dask spark] [--memory 4GB]
    .venv/bin/python benchmarks/scale_bench.py report        # markdown table on stdout, benchmarks/scale_curves.png

`run` measures, on metadata-only pools in DataComp's schema (curate_run_bench.py's vectorised generator, a
constant --rows-per-part per parquet file, so a worker's task does not grow with the pool):
  clip_score  `curate run --filter clip_score --fraction 0.3 --arch l14 --processes 2`;
  basic       `curate run --filter basic --processes 2` with the language column already cached in
              POOL/columns/language/. The cache is filled by this script, not by a cold run: fastText classifies
              ~9k captions/s on these cores (1,445 s for 12.8M, RESULTS.md), so a cold fill of 128M is ~4 h. The
              stand-in labels a caption `en` when it is ASCII (score 0.9), else `xx`, and carries the real
              detector's cache marker, so `curate run` reads it exactly as it reads a cache it wrote itself:
              the rerun's cost is the same, only the kept count differs from fastText's.
`dedup` runs `curate dedup --method phash --max-distance 8` (or --max-distance D; dedup_cluster_bench.py's `--one` child: its Dask
LocalCluster of 2 workers x 1 thread with --memory per worker; Spark `local[2]` with driver memory --memory,
CURATE_SPARK_DRIVER_MEMORY, which in local mode is also the executor) on pools of --hashes random hashes with 5%
planted near-copies (dedup_bench.py's generator), --hashes-per-file rows per column file.

The Dask and Spark dedup rows carry a "method": "exact-block groups, keyed rows" (curate.dedup.block_search and
nothing pool-sized persisted: curate.dedup.frames, since 2026-12-07), and Dask's since that evening "exact-block
groups, labels in the key shuffle" (no join of the pool's rows: DEDUP_METHODS), Spark's since then "exact-block groups,
labels joined by hash" (only the labels move in the join), and Dask's after that "exact-block groups, pair frames on
disk" (edges, star rounds and labels held as parquet beside the pool); "exact-block groups, rows persisted" rows
were measured with the same search while the job still persisted the pool's rows with their uids; rows without a
method were measured with the meet-in-the-middle join before both and are kept as such. Their "search" holds the
job's own counts (rows shuffled, largest block group, candidate pairs), tabled by `report`.

Every measurement is one child process tree sampled every 0.2 s (treemem.TreeSampler): each process's own peak
RSS, grouped by role (driver = the command's own process; workers = the engine's worker processes: the local
process pool, Dask workers, Spark's JVM and its Python workers). Heavy steps wait while another benchmark
(`pgrep -f curate_run_bench`) runs. Results accumulate in WORKDIR/scale/results.json (a rerun of the same job
and size replaces its row); `report` renders them with log-log fits of time and of worker memory against size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from curate_run_bench import REPO, _hex_strings, curate_executable, ensure_pool, log, machine_line, warm_page_cache
from treemem import TreeSampler  # benchmarks/ is on sys.path when a benchmark runs as a script

import numpy as np

HERE = Path(__file__).resolve().parent
PNG = HERE / "scale_curves.png"
DATACOMP = {"small": 12_800_000, "medium": 128_000_000, "large": 1_280_000_000, "xlarge": 12_800_000_000}


# --- waiting, measuring -------------------------------------------------------------------------------------


def wait_quiet(pattern: str = "curate_run_bench", poll: float = 30) -> None:
    """Sleep while another benchmark whose timings we would disturb is running."""
    waited = 0.0
    while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
        if waited == 0:
            log(f"waiting while `{pattern}` runs ...")
        time.sleep(poll)
        waited += poll
    if waited:
        log(f"... waited {waited:.0f} s")


def role(cmdline: str, root: bool) -> str:
    """Which part of an engine a process is, from its command line."""
    if root:
        return "driver"
    if "java" in cmdline.split(" ", 1)[0] or "org.apache.spark" in cmdline:
        return "spark JVM"
    if "pyspark" in cmdline:
        return "spark python worker"
    if "resource_tracker" in cmdline or "forkserver" in cmdline:
        return "helper"
    return "worker"


def measure(cmd: list[str], log_path: Path, env: dict | None = None) -> dict:
    """Run cmd, sampling its process tree: wall time and each process's peak RSS grouped by role (MiB)."""
    with open(log_path, "w") as logf:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        sampler = TreeSampler(proc.pid, interval=0.2, pss_every=0)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - start
        sampler.stop()
    if rc:
        raise SystemExit(f"command failed (exit {rc}): {' '.join(cmd)}\n--- {log_path} ---\n{log_path.read_text()[-3000:]}")
    roles: dict[str, list[float]] = {}
    for pid, peak in sampler.peak_by_pid.items():
        roles.setdefault(role(sampler.cmdline.get(pid, ""), pid == proc.pid), []).append(round(peak / 2**20, 1))
    return {"wall_s": round(wall, 2), "tree_mib": round(sampler.peak_rss / 2**20, 1),
            "roles": {k: sorted(v, reverse=True) for k, v in roles.items()}}


# dedup rows measured before the Dask/Spark pHash search became exact-block groups carry no "method"
OLD_DEDUP_METHOD = "exploded join (before 2026-12-07)"
DEDUP_METHOD = "exact-block groups, keyed rows"  # since 2026-12-07: nothing pool-sized persisted
# Dask since 2026-12-07 (afternoon): the labels ride in the key shuffle, no join of the pool's rows with them
# Spark since 2026-12-07 (evening): the labels carry their hash and join the keyed rows on it, where those rows are;
# Dask since then: the pair-sized frames (edges, star rounds, labels) held as parquet beside the pool, not in memory
DEDUP_METHODS = {"dask": "exact-block groups, pair frames on disk", "spark": "exact-block groups, labels joined by hash",
                 "local": "local search"}


def method(r: dict) -> str:
    return r.get("method") or (OLD_DEDUP_METHOD if r["job"].startswith("dedup") else "")


def record(work: Path, row: dict) -> None:
    """Add a measurement to WORKDIR/scale/results.json, replacing an earlier one of the same job, engine, method and
    size (rows of another method, e.g. the old pHash join, are kept)."""
    path = work / "results.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    key = (row["job"], row["engine"], method(row), row["n"])
    rows = [r for r in rows if (r["job"], r["engine"], method(r), r["n"]) != key] + [row]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, path)


def stamp() -> dict:
    return {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "load": round(os.getloadavg()[0], 2)}


# --- curate run ---------------------------------------------------------------------------------------------


def fill_language_cache(pool: Path) -> int:
    """Write POOL/columns/language/metadata-<part>.parquet as `curate run` would (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO))
    from curate.atomic import atomic_path
    from curate.signals.text_columns import _DETECTOR_KEY, _detector_name

    marker = _detector_name(None).encode()
    out_dir = pool / "columns" / "language"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for part in sorted((pool / "metadata").glob("*.parquet")):
        out = out_dir / f"metadata-{part.stem}.parquet"
        if out.exists() and (pq.read_schema(out).metadata or {}).get(_DETECTOR_KEY) == marker:
            continue
        t = pq.read_table(part, columns=["uid", "text"])
        english = pc.string_is_ascii(t.column("text"))  # null where the caption is null, as the detector gives
        table = pa.table({"uid": t.column("uid"),
                          "language": pc.if_else(english, "en", "xx"),
                          "language_score": pc.if_else(english, pa.scalar(0.9, pa.float32()), pa.scalar(0.5, pa.float32()))})
        with atomic_path(out) as tmp:
            pq.write_table(table.replace_schema_metadata({_DETECTOR_KEY: marker}), tmp)
        written += 1
    return written


RUN_JOBS = {
    "clip_score": ["--filter", "clip_score", "--fraction", "0.3", "--arch", "l14"],
    "basic": ["--filter", "basic"],
}


def bench_run(args, work: Path) -> None:
    for rows in args.rows:
        parts = max(1, round(rows / args.rows_per_part))
        wait_quiet()
        pool = ensure_pool(Path(args.workdir), rows, parts, seed=0)
        for job in args.jobs:
            if job == "basic":
                t = time.perf_counter()
                n = fill_language_cache(pool)
                log(f"language cache: {n} files written in {time.perf_counter() - t:.0f} s")
            wait_quiet()
            warm_page_cache(pool)
            out = work / f"out-{job}-{rows}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [curate_executable(), "run", "--pool", str(pool), *RUN_JOBS[job], "--output", str(out),
                   "--processes", str(args.processes), "--no-progress"]
            log(f"curate run {job}: {rows:,} rows in {parts} files ...")
            before = stamp()
            m = measure(cmd, work / f"run-{job}-{rows}.log")
            stats = json.loads((out / "stats.json").read_text())
            kept = int(np.load(out / "subset.npy", mmap_mode="r").shape[0])
            row = {"job": f"run {job}", "engine": f"local ({args.processes} processes)", "n": rows, "unit": "rows",
                   "parts": parts, **m, "job_s": stats.get("seconds"), "result": f"kept {kept:,}", **before,
                   "load_after": round(os.getloadavg()[0], 2)}
            record(work, row)
            log(f"  {m['wall_s']:.1f} s, driver {m['roles']['driver'][0]:,.0f} MiB, workers {m['roles'].get('worker')}, kept {kept:,}")
            shutil.rmtree(out, ignore_errors=True)


# --- pHash dedup --------------------------------------------------------------------------------------------


def hex64(values: np.ndarray):
    """uint64 values as 16-character lowercase hex strings (an arrow array; no per-row Python)."""
    import pyarrow as pa

    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    chars = np.empty((len(values), 16), np.uint8)
    hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
    chars[:, 0::2], chars[:, 1::2] = hexdigits[raw >> 4], hexdigits[raw & 15]
    offsets = np.arange(0, 16 * (len(values) + 1), 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def ensure_phash_pool(root: Path, n: int, per_file: int, seed: int = 0) -> Path:
    """A pool of only `columns/phash/*.parquet` (uid, phash): what `curate dedup --method phash` reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dedup_bench import generate

    pool = root / f"phash-{n}x{per_file}"
    done = pool / "manifest.json"
    if done.exists():
        return pool
    shutil.rmtree(pool, ignore_errors=True)
    col = pool / "columns" / "phash"
    col.mkdir(parents=True)
    t = time.perf_counter()
    values, _, _ = generate(n, 8, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for i, a in enumerate(range(0, n, per_file)):
        b = min(n, a + per_file)
        pq.write_table(pa.table({"uid": _hex_strings(rng, b - a, 16), "phash": hex64(values[a:b])}), col / f"{i:08d}.parquet")
    done.write_text(json.dumps({"hashes": n, "per_file": per_file, "seed": seed, "seconds": round(time.perf_counter() - t, 1)}) + "\n")
    log(f"phash pool: {n:,} hashes in {math.ceil(n / per_file)} files, {time.perf_counter() - t:.0f} s")
    return pool


def bench_dedup(args, work: Path) -> None:
    child = HERE / "dedup_cluster_bench.py"
    env = {**os.environ, "CURATE_SPARK_DRIVER_MEMORY": args.memory.lower().replace("gb", "g")}
    for n in args.hashes:
        wait_quiet()
        pool = ensure_phash_pool(work, n, args.hashes_per_file)
        for engine in args.engines:
            shutil.rmtree(pool / "columns" / "dedup_phash", ignore_errors=True)
            wait_quiet()
            job = f"dedup phash D={args.max_distance}"
            log(f"{job} on {engine}: {n:,} hashes ...")
            before = stamp()
            cmd = [sys.executable, str(child), "--one", "phash", engine, str(pool), str(work / "no-evals"), str(args.max_distance),
                   args.memory]
            log_path = work / f"dedup-{engine}-{n}.log"
            m = measure(cmd, log_path, env=env)
            out = json.loads([x for x in log_path.read_text().splitlines() if x.startswith("{")][-1])
            row = {"job": job, "engine": engine, "method": DEDUP_METHODS[engine],
                   "n": n, "unit": "hashes", "parts": math.ceil(n / args.hashes_per_file), **m, "job_s": out["job"],
                   "result": out["summary"], "digest": out["digest"], "search": out.get("search", {}),
                   "memory_limit": args.memory, **before, "load_after": round(os.getloadavg()[0], 2)}
            record(work, row)
            log(f"  {m['wall_s']:.1f} s (job {out['job']:.1f} s), roles {m['roles']}, {out['summary']}, search {out.get('search')}")


# --- report -------------------------------------------------------------------------------------------------


def engine_label(r: dict) -> str:
    """The engine, and for dedup the search method (the old join's rows stay beside the new ones)."""
    return f"{r['engine']}, {method(r)}" if method(r) else r["engine"]


def series(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["job"], engine_label(r), r["n"])):
        out.setdefault((r["job"], engine_label(r)), []).append(r)
    return out


def worker_peak(r: dict) -> float:
    """The largest single worker process (Spark: its JVM or a Python worker) of a measurement, MiB."""
    return max((v[0] for k, v in r["roles"].items() if k not in ("driver", "helper")), default=0.0)


def fit(ns, ys) -> tuple[float, float]:
    """y = a * n^b by least squares on log-log: (a, b)."""
    b, loga = np.polyfit(np.log(ns), np.log(ys), 1)
    return float(math.exp(loga)), float(b)


def nlogn_exponent(n0: float, n1: float) -> float:
    """The log-log slope n log n has between n0 and n1 (1 plus a little)."""
    return math.log((n1 * math.log(n1)) / (n0 * math.log(n0))) / math.log(n1 / n0)


def roles_text(r: dict) -> str:
    parts = []
    for k, v in r["roles"].items():
        if k in ("driver", "helper"):
            continue
        parts.append(f"{k} x{len(v)}: " + " / ".join(f"{x:,.0f}" for x in v[:4]) + (" ..." if len(v) > 4 else ""))
    return "; ".join(parts)


def report(work: Path, png: Path) -> str:
    rows = json.loads((work / "results.json").read_text())
    lines = [f"- machine: {machine_line()}; load average (1 min) at each start in the table",
             "",
             "| job | engine | size | files | wall s | job s | driver peak MiB | largest worker MiB | workers' peaks MiB | "
             "all processes MiB | result | load |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |"]
    for (job, engine), rs in series(rows).items():
        for r in rs:
            lines.append(f"| {job} | {engine} | {r['n']:,} {r['unit']} | {r['parts']} | {r['wall_s']:,.1f} | "
                         f"{(r['job_s'] or 0):,.1f} | {r['roles']['driver'][0]:,.0f} | {worker_peak(r):,.0f} | {roles_text(r)} | "
                         f"{r['tree_mib']:,.0f} | {r['result']} | {r['load']:.1f} |")
    lines += ["", "| job | engine | sizes | time exponent b (wall ~ n^b) | n log n's slope there | "
                  "largest-worker memory exponent | driver memory exponent |", "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    fits = {}
    for (job, engine), rs in series(rows).items():
        if len(rs) < 2:
            continue
        ns = [r["n"] for r in rs]
        a, b = fit(ns, [r["wall_s"] for r in rs])
        _, bw = fit(ns, [worker_peak(r) for r in rs])
        _, bd = fit(ns, [r["roles"]["driver"][0] for r in rs])
        fits[(job, engine)] = (a, b)
        lines.append(f"| {job} | {engine} | {ns[0]:,} .. {ns[-1]:,} | {b:.2f} | {nlogn_exponent(ns[0], ns[-1]):.2f} | "
                     f"{bw:+.2f} | {bd:+.2f} |")
    searched = [r for r in rows if r.get("search")]
    if searched:
        lines += ["", "| job | engine | hashes | rows shuffled (block, hash) | shuffle partitions | block groups | largest group | "
                      "oversize groups | candidate pairs compared | pairs within D | star rounds |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        seen = set()
        for r in sorted(searched, key=lambda r: (r["job"], r["engine"], r["n"])):
            s = r["search"]
            if (r["job"], r["engine"], r["n"], json.dumps(s, sort_keys=True)) in seen:  # the same search in another series
                continue
            seen.add((r["job"], r["engine"], r["n"], json.dumps(s, sort_keys=True)))
            lines.append(f"| {r['job']} | {r['engine']} | {r['n']:,} | {s.get('block_group_rows', 0):,} | {s.get('group_partitions', 0):,} | "
                         f"{s.get('block_groups', 0):,} | {s.get('largest_block_group', 0):,} | {s.get('oversize_block_groups', 0)} | "
                         f"{s.get('compared_pairs', 0):,} | {s.get('pairs_of_distinct_hashes', 0):,} | {s.get('component_rounds', '')} |")
    draw(rows, png)
    return "\n".join(lines)


def draw(rows: list[dict], png: Path) -> None:
    """Two log-log panels against size, one colour per series: wall time; peak memory of the largest worker and of the driver."""
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(REPO))
    from curate.report import _font, _png

    groups = series(rows)
    # tab10, then darker shades of it: a colour per series up to 20
    base = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    colours = base + [tuple(c // 2 for c in rgb) for rgb in base]
    W, H, m = 560, 420, (70, 30, 20, 60)  # panel size; margins left, top, right, bottom
    img = Image.new("RGB", (2 * W, H + 30 + 22 * math.ceil(len(groups) / 2)), "white")
    d = ImageDraw.Draw(img)
    font, small = _font(14), _font(11)
    ns = [r["n"] for r in rows]
    def driver(r):
        return r["roles"]["driver"][0]

    for panel, (title, value) in enumerate((("wall time (s)", lambda r: r["wall_s"]),
                                           ("peak RSS (MiB): worker filled, driver hollow", worker_peak))):
        ys = [value(r) for r in rows] + ([driver(r) for r in rows] if panel else [])
        x0, x1 = math.floor(math.log10(min(ns))), math.ceil(math.log10(max(ns)))
        y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        left, top, right, bottom = panel * W + m[0], m[1], panel * W + W - m[2], H - m[3]

        def px(n, y):
            return (left + (math.log10(n) - x0) / max(x1 - x0, 1) * (right - left),
                    bottom - (math.log10(y) - y0) / max(y1 - y0, 1) * (bottom - top))

        d.rectangle([left, top, right, bottom], outline=(0, 0, 0))
        for e in range(x0, x1 + 1):
            x, _ = px(10 ** e, 10 ** y0)
            d.line([x, top, x, bottom], fill=(225, 225, 225))
            d.text((x - 12, bottom + 6), f"1e{e}", fill=(0, 0, 0), font=small)
        for e in range(y0, y1 + 1):
            _, y = px(10 ** x0, 10 ** e)
            d.line([left, y, right, y], fill=(225, 225, 225))
            d.text((left - 48, y - 6), f"{10 ** e:g}", fill=(0, 0, 0), font=small)
        d.text((left, 8), title + ", log-log", fill=(0, 0, 0), font=font)
        d.text(((left + right) / 2 - 40, bottom + 24), "rows / hashes", fill=(0, 0, 0), font=small)
        for k, rs in enumerate(groups.values()):
            pts = [px(r["n"], value(r)) for r in rs]
            c = colours[k % len(colours)]
            if len(pts) > 1:
                d.line(pts, fill=c, width=2)
            for x, y in pts:
                d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=c)
            if panel:  # the driver of the same series
                pts = [px(r["n"], driver(r)) for r in rs]
                if len(pts) > 1:
                    d.line(pts, fill=c, width=1)
                for x, y in pts:
                    d.ellipse([x - 4, y - 4, x + 4, y + 4], outline=c, width=2)
    for k, (job, engine) in enumerate(groups):
        x, y = 20 + (k % 2) * W, H + 10 + 22 * (k // 2)
        d.rectangle([x, y + 3, x + 14, y + 13], fill=colours[k % len(colours)])
        d.text((x + 20, y), f"{job}, {engine}", fill=(0, 0, 0), font=font)
    tmp = png.with_suffix(".tmp.png")
    tmp.write_bytes(_png(img))
    os.replace(tmp, png)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(HERE / "_work"), help="pools and outputs (results in WORKDIR/scale/)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="curate run clip_score and basic (language cached) at --rows")
    r.add_argument("--rows", type=int, nargs="+", default=[1_280_000, 12_800_000, 128_000_000])
    r.add_argument("--rows-per-part", type=int, default=400_000, help="rows per metadata parquet file")
    r.add_argument("--jobs", nargs="+", choices=sorted(RUN_JOBS), default=["clip_score", "basic"])
    r.add_argument("--processes", type=int, default=2)
    dd = sub.add_parser("dedup", help="curate dedup --method phash --max-distance D on Dask and Spark at --hashes")
    dd.add_argument("--hashes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    dd.add_argument("--hashes-per-file", type=int, default=125_000)
    dd.add_argument("--engines", nargs="+", choices=["local", "dask", "spark"], default=["dask", "spark"])
    dd.add_argument("--memory", default="4GB", help="per Dask worker (memory_limit); Spark driver memory (local mode)")
    dd.add_argument("--max-distance", type=int, default=8, help="D: pHash pairs within D bits (default 8)")
    rep = sub.add_parser("report", help="the table and fits on stdout, the plot to --png")
    rep.add_argument("--png", default=str(PNG))
    args = ap.parse_args(argv)
    work = Path(args.workdir) / "scale"
    work.mkdir(parents=True, exist_ok=True)
    if args.cmd == "run":
        bench_run(args, work)
    elif args.cmd == "dedup":
        bench_dedup(args, work)
    else:
        print(report(work, Path(args.png)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
