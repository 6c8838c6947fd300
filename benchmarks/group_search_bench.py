"""One block group's search, alone: the largest task pHash dedup gives a Dask or Spark worker at a scale we
cannot run here (RESULTS.md, "How cost grows", the projection rows).

At D = 4 the block groups are keyed by 12- or 13-bit blocks, so a pool of n distinct hashes gives groups of
about n / 4,096: ~24.4k at 100M (measured: largest 24,769), ~312k at `large` and ~3.1M at `xlarge`, below
MAX_GROUP (4M), so such a group is searched whole by curate.dedup.hamming. Above MAX_GROUP a group is searched
in D + 1 sub-blocks (block_search.search). Each size runs in a fresh process: random hashes sharing one 12-bit
block, 5% planted near-copies within D (dedup_bench's generator), searched on the 52 other bits exactly as
block_search.group_pairs hands a large group to `search`. Peak RSS is the process's own (ru_maxrss, the
hashes and their generation included); "the search's own" is the peak of what the search allocated
(tracemalloc, which numpy reports to), the memory a worker needs for the task above the hashes it holds.

    .venv/bin/python benchmarks/group_search_bench.py [--sizes 24769 312500 3125000 4000000 6000000] [--d 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def one(n: int, d: int) -> dict:
    import numpy as np

    from curate.dedup.block_search import MAX_GROUP, SMALL_GROUP, drop_block, exact_blocks, search
    from dedup_bench import generate

    values, _, _ = generate(n, d, seed=1)
    blk = exact_blocks(d)[-1]  # the narrowest block: the largest groups
    values = (values & ~np.uint64(blk.mask << blk.shift)) | np.uint64(0x5A5 << blk.shift)  # one group
    values = np.unique(values)  # the search takes distinct hashes (nodes)
    sub = drop_block(values, blk)
    import tracemalloc

    counts = {"compared_pairs": 0, "oversize_block_groups": 0, "largest_block_group": 0, "block_groups": 0,
              "block_group_rows": 0}
    tracemalloc.start()
    t = time.perf_counter()
    i, j = search(sub, d, 64 - blk.nbits, (SMALL_GROUP, MAX_GROUP), counts)
    wall = time.perf_counter() - t
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"hashes": int(len(values)), "D": d, "block_bits": blk.nbits, "wall_s": round(wall, 2),
            "peak_rss_mib": round(peak / 1024), "search_mib": round(traced / 2**20),
            "pairs": int(len(i)), "compared_pairs": counts["compared_pairs"],
            "split": bool(counts["oversize_block_groups"]), "max_group": MAX_GROUP}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[24_769, 312_500, 3_125_000, 4_000_000, 6_000_000])
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.d)), flush=True)
        return 0
    print("| hashes in the group | D | searched | wall s | peak RSS MiB | the search's own MiB | pairs within D | compared pairs |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--d", str(args.d)], capture_output=True,
                             text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        how = f"in {r['D'] + 1} sub-blocks (> MAX_GROUP)" if r["split"] else "whole (hamming)"
        print(f"| {r['hashes']:,} | {r['D']} | {how} | {r['wall_s']:.2f} | {r['peak_rss_mib']:,} | {r['search_mib']:,} "
              f"| {r['pairs']:,} | {r['compared_pairs']:,} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
