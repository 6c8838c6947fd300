"""One block group's search, alone: the largest task pHash dedup gives a Dask or Spark worker at a scale we
cannot run here (RESULTS.md, "How cost grows", the projection rows).

At D = 4 the block groups are keyed by 12- or 13-bit blocks, so a pool of n distinct hashes gives groups of
about n / 4,096: ~24.4k at 100M (measured: largest 24,769), ~312k at `large` and ~3.1M at `xlarge`, below
MAX_GROUP (4M), so such a group is searched whole by curate.dedup.hamming. Above MAX_GROUP a group is searched
in D + 1 sub-blocks (block_search.search). Each size runs in a fresh process: random hashes sharing one 12-bit
block, 5% planted near-copies within D (dedup_bench's generator), searched on the 52 other bits exactly as
block_search.group_pairs hands a large group to `search`. Peak RSS is the process's own (its generation
included); "the search's own" is the search's peak RSS above the RSS it started from (Linux: the peak is reset
through /proc/self/clear_refs just before), the memory a worker needs for the task above the hashes it holds.
(tracemalloc would see the same, but slows the many small allocations of the sub-block search 2x.)

    .venv/bin/python benchmarks/group_search_bench.py [--sizes 24769 312500 3125000 4000000 6000000] [--d 4] [--max-group N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def one(n: int, d: int, max_group: int | None = None) -> dict:
    import numpy as np

    from curate.dedup.block_search import MAX_GROUP, SMALL_GROUP, drop_block, exact_blocks, search
    from dedup_bench import generate

    max_group = max_group or MAX_GROUP

    values, _, _ = generate(n, d, seed=1)
    blk = exact_blocks(d)[-1]  # the narrowest block: the largest groups
    values = (values & ~np.uint64(blk.mask << blk.shift)) | np.uint64(0x5A5 << blk.shift)  # one group
    values = np.unique(values)  # the search takes distinct hashes (nodes)
    sub = drop_block(values, blk)
    counts = {"compared_pairs": 0, "oversize_block_groups": 0, "largest_block_group": 0, "block_groups": 0,
              "block_group_rows": 0}
    del values
    peak_before = _status_kib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from the current RSS
    start = _status_kib("VmRSS")
    t = time.perf_counter()
    i, j = search(sub, d, 64 - blk.nbits, (SMALL_GROUP, max_group), counts)
    wall = time.perf_counter() - t
    search_peak = _status_kib("VmHWM")
    peak = max(peak_before, search_peak)
    return {"hashes": int(len(sub)), "D": d, "block_bits": blk.nbits, "wall_s": round(wall, 2),
            "peak_rss_mib": round(peak / 1024), "search_mib": round((search_peak - start) / 1024),
            "pairs": int(len(i)), "compared_pairs": counts["compared_pairs"],
            "split": bool(counts["oversize_block_groups"]), "max_group": max_group}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[24_769, 312_500, 3_125_000, 4_000_000, 6_000_000])
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--max-group", type=int, default=None, help="searched whole up to this many hashes (default MAX_GROUP)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.d, args.max_group)), flush=True)
        return 0
    print("| hashes in the group | D | searched | wall s | peak RSS MiB | the search's own MiB | pairs within D | compared pairs |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for n in args.sizes:
        extra = ["--max-group", str(args.max_group)] if args.max_group else []
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--d", str(args.d), *extra], capture_output=True,
                             text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        how = f"in {r['D'] + 1} sub-blocks (> MAX_GROUP)" if r["split"] else "whole (hamming)"
        print(f"| {r['hashes']:,} | {r['D']} | {how} | {r['wall_s']:.2f} | {r['peak_rss_mib']:,} | {r['search_mib']:,} "
              f"| {r['pairs']:,} | {r['compared_pairs']:,} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
