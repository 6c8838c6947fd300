"""`curate demo`: generate the miniature pool, serve it on loopback, download it, filter it, reshard it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from curate.atomic import atomic_path
from curate.commands.download import print_summary as print_download_summary
from curate.commands.reshard import print_summary as print_reshard_summary
from curate.commands.run import print_summary as print_run_summary
from curate.demo.server import LoopbackImageServer
from curate.demo.world import build_world
from curate.download import DownloadOptions, download
from curate.engines import LocalEngine
from curate.pool import Pool
from curate.reshard import reshard
from curate.run import run_filters
from filters.registry import build_filter


def run_demo(workdir: str = "demo_out", samples: int = 2000, seed: int = 0, processes: int = 2) -> int:
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    web = work / "web"
    pool_dir = work / "pool"
    with LoopbackImageServer(web) as server:
        print(f"[1/4] generating {samples} image-text pairs (seed {seed}) served at {server.base}")
        table = build_world(web, samples, seed, server.url)
        url_list = work / "url_list.parquet"
        with atomic_path(url_list) as tmp:
            pq.write_table(table, tmp)
        print(f"[2/4] curate download --url-list {url_list} --pool {pool_dir}")
        with LocalEngine(processes) as engine:
            summary = download(str(url_list), pool_dir, engine, DownloadOptions(image_size=128, shard_size=500, threads=16, timeout=5))
        print_download_summary(summary)
    out = work / "clip_score_l14_30pct"
    print(f"[3/4] curate run --pool {pool_dir} --filter clip_score --fraction 0.3 --arch l14 --output {out}")
    pool = Pool(pool_dir)
    with LocalEngine(processes) as engine:
        stats = run_filters(pool, [build_filter("clip_score", arch="l14", fraction=0.3)], out, engine)
        print_run_summary(stats)
        print(f"[4/4] curate reshard --subset {out}/subset.npy --output {out}/shards")
        rs = reshard(pool, stats["subset_file"], out / "shards", engine, shard_size=250, overwrite=True)
        print_reshard_summary(rs)
    kinds = _kept_kinds(table, out / "subset.npy")
    print(f"what clip_score kept, by how the demo made each sample: {json.dumps(kinds)}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; everything is under {work}")
    return 0 if summary["reconciled"] and rs["reconciled"] else 1


def _kept_kinds(table, subset_path) -> dict:
    import numpy as np

    from curate.subset import read_subset, subset_counts
    from curate.uids import uids_to_pairs

    subset = read_subset(subset_path)
    kept = subset_counts(subset, uids_to_pairs(table.column("uid"))) > 0
    kinds = np.array(table.column("demo_kind").to_pylist())
    return {k: f"{int(kept[kinds == k].sum())}/{int((kinds == k).sum())}" for k in sorted(set(kinds))}
