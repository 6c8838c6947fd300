"""Dask pHash dedup with a memory timeline: each worker's RSS and the task prefixes in flight, every second.

Which phase of the job sets a worker's peak (RESULTS.md, "How cost grows"). A LocalCluster of 2 workers x 1
thread, 4 GB each, as scale_bench.py runs; the second argument sets Dask's p2p comm buffer ('default' keeps it), the
third --max-distance (8 if left out):

    .venv/bin/python benchmarks/dask_memory_timeline.py benchmarks/_work/scale/phash-10000000x125000 default
    .venv/bin/python benchmarks/dask_memory_timeline.py benchmarks/_work/scale/phash-10000000x125000 "256 MiB"
    .venv/bin/python benchmarks/dask_memory_timeline.py benchmarks/_work/scale/phash-10000000x125000 default 4  # D=4

Prints the peak per task prefix; the whole timeline goes to /tmp/timeline-POOL-BUFFER.json.
"""
import json, logging, sys, threading, time
from pathlib import Path
import dask, psutil
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    pool, buf = Path(sys.argv[1]), sys.argv[2]  # buf: 'default' or e.g. '256 MiB'
    d = sys.argv[3] if len(sys.argv) > 3 else "8"  # --max-distance
    if buf != "default":  # before the cluster starts: the nannies hand this config to their workers
        dask.config.set({"distributed.p2p.comm.buffer": buf})
    from distributed import Client, LocalCluster
    from curate.cli import main as curate_main
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="4GB",
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    print("worker config p2p buffer:", client.run(lambda: dask.config.get("distributed.p2p.comm.buffer")), flush=True)
    me = psutil.Process()
    done = threading.Event()
    timeline = []
    def processing(dask_scheduler=None):
        from collections import Counter
        return dict(Counter(ts.prefix.name for ts in dask_scheduler.tasks.values() if ts.state == "processing"))
    def sample():
        t0 = time.time()
        while not done.is_set():
            rss = sorted((p.memory_info().rss >> 20 for p in me.children(recursive=True)
                          if "spawn_main" in " ".join(p.cmdline())), reverse=True)
            try:
                pr = client.run_on_scheduler(processing)
            except Exception as e:
                pr = {"?": str(e)[:40]}
            timeline.append((round(time.time() - t0), rss, pr))
            time.sleep(1)
    th = threading.Thread(target=sample, daemon=True); th.start()
    t = time.time()
    rc = curate_main(["dedup", "--pool", str(pool), "--method", "phash", "--max-distance", d,
                      "--engine", "dask", "--dask-scheduler", cluster.scheduler_address, "--no-progress"])
    wall = time.time() - t
    done.set(); th.join()
    peak = max((r[1][0] for r in timeline if r[1]), default=0)
    print(f"rc {rc} wall {wall:.1f} s, D={d}, buffer {buf}, largest worker peak {peak} MiB", flush=True)
    # peak per phase (the prefixes processing at the time)
    by = {}
    for _, rss, pr in timeline:
        for k in pr or {"idle": 1}:
            by[k] = max(by.get(k, 0), rss[0] if rss else 0)
    for k, v in sorted(by.items(), key=lambda x: -x[1])[:15]:
        print(f"  {v:6d} MiB  {k}")
    Path(f"/tmp/timeline-{pool.name}-D{d}-{buf.replace(' ', '')}.json").write_text(json.dumps(timeline))
    client.close(); cluster.close()

if __name__ == '__main__':
    main()
