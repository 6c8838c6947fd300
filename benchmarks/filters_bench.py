"""Each DataComp baseline recipe (configs/filters/*.yaml) through `curate run` on a generated pool: time and peak memory.

    .venv/bin/python benchmarks/filters_bench.py [--rows 12800000] [--parts 32] [--image-rows 1280000]
        [--processes 2] [--k 1000] [--only basic laion2b ...] [--report]

1. The metadata pool comes from benchmarks/curate_run_bench.py (its vectorised generator, DataComp's schema,
   reused under benchmarks/_work/pool-<rows>x<parts>/ when already there). This script does not write into
   that folder: it makes WORKDIR/filters-<rows>x<parts>/ whose metadata/ links to those parquet files and
   whose columns/ holds what the baselines need besides metadata: `aesthetic_score` and `dedup_phash_keep`
   per partition (as the aesthetic stage and `curate dedup` would write them) and the language cache that
   the first English-filtering run fills (the first such run is timed cold, the rest warm).
2. The embedding baselines (image_based, image_based_clip_score) need L/14 image embeddings: DataComp's .npz
   beside each parquet (`l14_img`, 768 float16, L2-normalised, drawn around 4,096 random centres) for a pool of
   --image-rows rows, and a targets file (1,000 vectors near random centres, standing in for ImageNet features).
   k is --k (default 1,000; `auto` gives rows/128, which on 2 CPU cores is hours of k-means).
3. Each recipe runs as `curate run --config RECIPE --no-report` in a subprocess, measured as
   curate_run_bench.measure does (wall time; peak PSS/RSS of the process tree; the largest process's peak RSS).
   With --report one extra run of basic writes the HTML report, to show its cost.
Prints a markdown table (machine, date, versions) and writes it to WORKDIR/filters-results.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from curate_run_bench import curate_executable, ensure_pool, log, machine_line, measure, versions, warm_page_cache  # noqa: E402

METADATA_BASELINES = ["no_filter", "basic", "clip_score_l14_30pct", "laion2b", "text_based", "laion_a"]
IMAGE_BASELINES = ["image_based", "image_based_clip_score"]
DIM = 768


def linked_pool(src: Path, dst: Path) -> Path:
    """dst/metadata/*.parquet as symlinks to src's; dst/columns/ is ours."""
    meta = dst / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    for p in sorted((src / "metadata").glob("*.parquet")):
        link = meta / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    return dst


def add_store_columns(pool: Path, seed: int = 1) -> None:
    """aesthetic_score (float32 ~ N(5, 1), 2% null) and dedup_phash_keep (85% true, 1% null) per partition."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i, p in enumerate(sorted((pool / "metadata").glob("*.parquet"))):
        for signal, col in (("aesthetic", "aesthetic_score"), ("dedup", "dedup_phash_keep")):
            out = pool / "columns" / signal / f"{p.stem}.parquet"
            if out.exists():
                continue
            uids = pq.read_table(p, columns=["uid"]).column("uid")
            rng = np.random.default_rng(seed * 1_000_003 + i * 2 + (signal == "dedup"))
            n = len(uids)
            if col == "aesthetic_score":
                arr = pa.array(rng.normal(5.0, 1.0, n).astype(np.float32), mask=rng.random(n) < 0.02)
            else:
                arr = pa.array(rng.random(n) > 0.15, mask=rng.random(n) < 0.01)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            pq.write_table(pa.table({"uid": uids, col: arr}), tmp)
            os.replace(tmp, out)


def add_embeddings(pool: Path, seed: int = 2, centres: int = 4096) -> Path:
    """l14_img .npz beside each parquet, and targets.npy (1,000 rows); returns the targets path."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, DIM)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    for i, p in enumerate(sorted((pool / "metadata").glob("*.parquet"))):
        npz = p.with_suffix(".npz")
        if npz.exists():
            continue
        n = pq.read_metadata(p).num_rows
        r = np.random.default_rng(seed * 7919 + i)
        emb = c[r.integers(0, centres, n)] + r.normal(0, 0.03, (n, DIM)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        tmp = npz.with_name(f".{npz.stem}.tmp.npz")
        np.savez(tmp, l14_img=emb.astype(np.float16))
        os.replace(tmp, npz)
    targets = pool / "targets.npy"
    if not targets.exists():
        t = c[rng.choice(centres, 1000, replace=False)] + rng.normal(0, 0.03, (1000, DIM)).astype(np.float32)
        np.save(targets, (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32))
    return targets


def language_cached(pool: Path, fasttext_model: str | None) -> bool:
    """Whether the pool's language cache was filled by this detector (`curate run` recomputes otherwise)."""
    import pyarrow.parquet as pq

    from curate.signals.text_columns import _DETECTOR_KEY, _detector_name

    files = sorted((pool / "columns" / "language").glob("*.parquet"))
    return bool(files) and all((pq.read_schema(f).metadata or {}).get(_DETECTOR_KEY) == _detector_name(fasttext_model).encode()
                               for f in files)


def run_recipe(name: str, pool: Path, out: Path, processes: int, extra: list[str], report: bool, logs: Path) -> dict:
    cmd = [curate_executable(), "run", "--pool", str(pool), "--config", str(REPO / "configs" / "filters" / f"{name}.yaml"),
           "--output", str(out), "--processes", str(processes), *extra]
    if not report:
        cmd.append("--no-report")
    log(f"{name}: {' '.join(cmd[1:])}")
    m = measure(cmd, logs / f"{name}{'-report' if report else ''}.log")
    stats = json.loads((out / "stats.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    log(f"{name}: {m['wall_s']:.1f} s, tree PSS {m['tree_pss_mb']:.0f} MB, kept {stats['kept']:,}")
    return {**m, "kept": stats["kept"], "rows": stats["rows_in"], "pool_steps_s": timings.get("pool_steps"),
            "report_s": timings.get("report")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=12_800_000)
    ap.add_argument("--parts", type=int, default=32)
    ap.add_argument("--image-rows", type=int, default=1_280_000, help="rows of the pool with embeddings (0: skip)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--k", default="1000", help="image_based k (an integer, or auto)")
    ap.add_argument("--only", nargs="*", default=None, help="baselines to run (default: all)")
    ap.add_argument("--report", action="store_true", help="also time one run of basic with the HTML report")
    ap.add_argument("--fasttext-model", default=None, metavar="LID176",
                    help="fastText lid.176.bin/.ftz for the English filters, as DataComp uses (default: the packaged lid.176.ftz)")
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "_work"))
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    started = dt.datetime.now().astimezone()
    load_before = os.getloadavg()
    wanted = set(args.only) if args.only else set(METADATA_BASELINES + IMAGE_BASELINES)
    rows = []

    groups = []
    if wanted & set(METADATA_BASELINES) and args.rows:
        src = ensure_pool(work, args.rows, args.parts, 0)
        pool = linked_pool(src, work / f"filters-{args.rows}x{args.parts}")
        add_store_columns(pool)
        groups.append((pool, [b for b in METADATA_BASELINES if b in wanted], []))
    if wanted & set(IMAGE_BASELINES) and args.image_rows:
        src = ensure_pool(work, args.image_rows, args.parts, 0)
        pool = linked_pool(src, work / f"filters-img-{args.image_rows}x{args.parts}")
        t = time.perf_counter()
        targets = add_embeddings(pool)
        log(f"embeddings: {time.perf_counter() - t:.0f} s")
        extra = ["--set", f"image_based.targets={targets}", "--set", f"image_based.k={args.k}"]
        groups.append((pool, [b for b in IMAGE_BASELINES if b in wanted], extra))
    if args.fasttext_model:
        groups = [(pool, names, [*extra, "--fasttext-model", str(Path(args.fasttext_model).resolve())])
                  for pool, names, extra in groups]

    for pool, names, extra in groups:
        warm_page_cache(pool)
        logs = pool / "logs"
        logs.mkdir(exist_ok=True)
        cold = not language_cached(pool, args.fasttext_model)
        for name in names:
            needs_lang = name in ("basic", "laion2b", "text_based", "image_based", "image_based_clip_score")
            detector = f"fastText {Path(args.fasttext_model).name}" if args.fasttext_model else "fastText lid.176.ftz (packaged)"
            note = f"language cold ({detector}, cached after)" if needs_lang and cold else (f"language cached ({detector})" if needs_lang else "")
            if needs_lang:
                cold = False
            r = run_recipe(name, pool, pool / "out" / name, args.processes, extra, False, logs)
            rows.append({"name": name, "note": note, **r})
        if args.report and "basic" in names:
            r = run_recipe("basic", pool, pool / "out" / "basic-report", args.processes, extra, True, logs)
            rows.append({"name": "basic + report.html", "note": f"report {r['report_s']} s", **r})

    lines = [
        f"### Filter baselines through `curate run --config configs/filters/NAME.yaml` (`benchmarks/filters_bench.py`)",
        "",
        f"- date: {started:%Y-%m-%d %H:%M %Z}; machine: {machine_line()}; load average before/after: "
        f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}; --processes {args.processes}",
        f"- {versions()}",
        f"- image_based: k = {args.k}, 64 points per centroid for the k-means sample, 20 iterations, faiss-cpu",
        "",
        "| baseline | rows | kept | wall s | pool-wide steps s | peak MB (tree PSS) | peak MB (tree RSS) | largest process MB | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['rows']:,} | {r['kept']:,} | {r['wall_s']:.1f} | {r['pool_steps_s'] or 0:.1f} | "
                     f"{r['tree_pss_mb']:,.0f} | {r['tree_rss_mb']:,.0f} | {r['largest_process_mb']:,.0f} | {r['note']} |")
    text = "\n".join(lines)
    print(text, flush=True)
    (work / "filters-results.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
