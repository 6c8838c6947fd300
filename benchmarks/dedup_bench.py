"""pHash near-duplicate search: multi-index hashing (curate.dedup.hamming) against faiss IndexBinaryFlat range
search (brute force) and a BK-tree, on generated 64-bit hashes with planted near-duplicate clusters; and
decontamination of a pool against eval hashes. One run, one machine, every method single-threaded.

    .venv/bin/python benchmarks/dedup_bench.py [--sizes 1000000 10000000] [--distances 4 8] [--bf-queries 5000]

Each measurement runs in its own subprocess (peak RSS = that process's ru_maxrss, data generation included,
so the baseline of numpy + the data is in every number). Times are wall-clock seconds of the measured step;
the CPU seconds (user + system of that process over the same step) are printed beside them because the
machine is shared: the CPU ratio is the steadier comparison when other jobs steal the cores. Brute force and the BK-tree are measured on a
subsample of queries (and, for the BK-tree, a subsampled tree) and extrapolated linearly to all queries;
the table says so. "same output" compares the pairs brute force finds for its sampled queries with the
pairs multi-index hashing reports for those same hashes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generate(n: int, d: int, seed: int = 0, cluster_fraction: float = 0.05):
    """n distinct-ish random hashes where ~cluster_fraction of them are copies (<= d//2 bits each from a root,
    so every pair in a cluster is within d). Returns (hashes, planted pairs as (i, j) with i < j)."""
    rng = np.random.default_rng(seed)
    n_copies = int(n * cluster_fraction)
    n_roots = n - n_copies
    values = rng.integers(0, 2**64, n, dtype=np.uint64)
    roots = rng.integers(0, n_roots, n_copies)
    copies = values[roots].copy()
    flips = rng.integers(0, d // 2 + 1, n_copies)
    for k in range(d // 2):
        bit = rng.integers(0, 64, n_copies).astype(np.uint64)
        on = flips > k
        copies[on] ^= np.uint64(1) << bit[on]  # a repeated bit may cancel: still within d//2
    values[n_roots:] = copies
    perm = rng.permutation(n)
    values = values[perm]
    pos = np.empty(n, np.int64)
    pos[perm] = np.arange(n)
    members = np.concatenate([roots, np.arange(n_roots, n)])
    cluster = np.concatenate([roots, roots])
    order = np.argsort(cluster, kind="stable")
    cl, mem = cluster[order], pos[members[order]]
    pi, pj = [], []
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]])
    ends = np.r_[starts[1:], len(cl)]
    for s, e in zip(starts, ends):
        m = np.unique(mem[s:e])
        for a in range(len(m)):
            for b in range(a + 1, len(m)):
                pi.append(m[a])
                pj.append(m[b])
    return values, np.array(pi, np.int64), np.array(pj, np.int64)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(method: str, n: int, d: int, extra: int) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    values, pi, pj = generate(n, d)
    t0, c0 = time.perf_counter(), _cpu()
    if method == "mih":
        from curate.dedup.hamming import near_pairs

        stats: dict = {}
        i, j, _ = near_pairs(values, d, stats=stats)
        sec, cpu = time.perf_counter() - t0, _cpu() - c0
        found = set(zip(i.tolist(), j.tolist())) if len(i) < 50_000_000 else None
        recall = np.mean([(a, b) in found for a, b in zip(pi.tolist(), pj.tolist())]) if found is not None else None
        rng = np.random.default_rng(1)
        sample = np.sort(rng.choice(n, extra, replace=False))
        insample = np.isin(i, sample) | np.isin(j, sample)
        sampled_pairs = sorted(zip(i[insample].tolist(), j[insample].tolist()))
        return {"seconds": sec, "cpu": cpu, "pairs": int(len(i)), "planted_pairs": int(len(pi)), "recall": float(recall),
                "sampled_pairs": sampled_pairs, "plan": stats.get("plan"), "candidates": stats.get("candidates"), "peak_mib": _peak_mib()}
    if method == "flat":
        rng = np.random.default_rng(1)
        sample = np.sort(rng.choice(n, extra, replace=False))
        codes = values.view(np.uint8).reshape(n, 8)
        index = faiss.IndexBinaryFlat(64)
        index.add(codes)
        t0, c0 = time.perf_counter(), _cpu()
        lims, dist, ids = index.range_search(codes[sample], d + 1)  # faiss: distance < radius
        sec, cpu = time.perf_counter() - t0, _cpu() - c0
        q = np.repeat(sample, np.diff(lims.astype(np.int64)))
        pairs = sorted({(min(a, b), max(a, b)) for a, b in zip(q.tolist(), ids.tolist()) if a != b})
        return {"seconds_sample": sec, "queries": extra, "seconds": sec * n / extra, "cpu": cpu * n / extra,
                "sampled_pairs": pairs, "peak_mib": _peak_mib()}
    if method == "bktree":
        rng = np.random.default_rng(1)
        tree_n = min(n, extra)
        tree_vals = values[rng.choice(n, tree_n, replace=False)].tolist()
        t0 = time.perf_counter()
        root = [tree_vals[0], {}]
        for v in tree_vals[1:]:
            node = root
            while True:
                dd = (v ^ node[0]).bit_count()
                child = node[1].get(dd)
                if child is None:
                    node[1][dd] = [v, {}]
                    break
                node = child
        build = time.perf_counter() - t0
        queries = values[rng.choice(n, 200, replace=False)].tolist()
        t0 = time.perf_counter()
        visited = 0
        for qv in queries:
            stack = [root]
            while stack:
                node = stack.pop()
                visited += 1
                dd = (qv ^ node[0]).bit_count()
                for k, child in node[1].items():
                    if dd - d <= k <= dd + d:
                        stack.append(child)
        per_query = (time.perf_counter() - t0) / len(queries)
        frac = visited / len(queries) / tree_n
        # at full size: per-query cost scales with the nodes visited (same fraction of a tree n/tree_n larger)
        est = n * per_query * (n / tree_n) + build * (n / tree_n) * np.log(n) / np.log(tree_n)
        return {"tree_size": tree_n, "build_seconds": build, "per_query_seconds": per_query, "visited_fraction": frac,
                "seconds": est, "peak_mib": _peak_mib()}
    if method == "decontam":
        from curate.dedup.hamming import cross_pairs

        rng = np.random.default_rng(2)
        ev = rng.integers(0, 2**64, extra, dtype=np.uint64)
        planted = rng.choice(n, extra // 100, replace=False)
        ev[: len(planted)] = values[planted] ^ np.uint64(0b101)
        t0, c0 = time.perf_counter(), _cpu()
        a, b, _ = cross_pairs(ev, values, d)
        sec, cpu = time.perf_counter() - t0, _cpu() - c0
        got = set(zip(a.tolist(), b.tolist()))
        recall = np.mean([(k, int(p)) in got for k, p in enumerate(planted)])
        return {"seconds": sec, "cpu": cpu, "matches": int(len(a)), "planted_recall": float(recall), "peak_mib": _peak_mib()}
    raise SystemExit(f"unknown method {method}")


def _s(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:,.1f}"


def run_child(method, n, d, extra):
    out = subprocess.run([sys.executable, __file__, "--one", method, str(n), str(d), str(extra)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--distances", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--bf-queries", type=int, default=5000)
    ap.add_argument("--bk-tree", type=int, default=50_000, help="BK-tree size (0: skip the BK-tree rows)")
    ap.add_argument("--eval", type=int, default=100_000)
    ap.add_argument("--one", nargs=4, default=None)
    args = ap.parse_args()
    if args.one:
        m, n, d, extra = args.one
        print(json.dumps(one(m, int(n), int(d), int(extra))))
        return
    import faiss

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), python {platform.python_version()}, "
          f"numpy {np.__version__}, faiss {faiss.__version__}; every method single-threaded")
    print("| hashes | D | method | time (s) | CPU (s) | peak RSS (MiB) | recall of planted pairs | output | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    sys.stdout.flush()
    for n in args.sizes:
        for d in args.distances:
            mih = run_child("mih", n, d, args.bf_queries)
            flat = run_child("flat", n, d, args.bf_queries)
            same = "identical" if mih["sampled_pairs"] == flat["sampled_pairs"] else "DIFFERENT"
            print(f"| {n:,} | {d} | multi-index hashing (ours) | {_s(mih['seconds'])} | {_s(mih['cpu'])} | {mih['peak_mib']:.0f} | "
                  f"{mih['recall']:.4%} ({mih['planted_pairs']:,} planted, {mih['pairs']:,} found) | {same} to brute force on "
                  f"{args.bf_queries} sampled hashes ({len(flat['sampled_pairs'])} pairs) | {mih['plan']}; "
                  f"{mih['candidates']:,} verified on 64 bits |")
            print(f"| {n:,} | {d} | faiss IndexBinaryFlat range search | {flat['seconds']:,.0f} (extrapolated) | {flat['cpu']:,.0f} | "
                  f"{flat['peak_mib']:.0f} | 100% by construction | | {flat['queries']} queries took {flat['seconds_sample']:.1f} s, "
                  f"x{n / flat['queries']:,.0f}; **ours is {flat['seconds'] / mih['seconds']:,.0f}x faster** "
                  f"({flat['cpu'] / mih['cpu']:,.0f}x in CPU time) |")
            sys.stdout.flush()
            if args.bk_tree:
                bk = run_child("bktree", n, d, args.bk_tree)
                print(f"| {n:,} | {d} | BK-tree (Python) | {bk['seconds']:,.0f} (extrapolated) | | {bk['peak_mib']:.0f} (at {bk['tree_size']:,}) | "
                      f"exact | | tree of {bk['tree_size']:,}: build {bk['build_seconds']:.1f} s, {bk['per_query_seconds'] * 1e3:.1f} ms/query, "
                      f"visits {bk['visited_fraction']:.0%} of nodes; ours is {bk['seconds'] / mih['seconds']:,.0f}x faster |")
                sys.stdout.flush()
        for d in args.distances:
            dc = run_child("decontam", n, d, args.eval)
            print(f"| {n:,} pool vs {args.eval:,} eval | {d} | decontamination (cross join) | {_s(dc['seconds'])} | {_s(dc['cpu'])} | "
                  f"{dc['peak_mib']:.0f} | {dc['planted_recall']:.2%} of {args.eval // 100:,} planted | {dc['matches']:,} matches | |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
