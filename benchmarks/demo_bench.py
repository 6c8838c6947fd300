"""Does curation matter in the demo's world? Run `curate demo` over several seeds and report each recipe's
mean and spread on the generated zero-shot tasks (issue 8: CLIP-score filtering must beat no filtering by
more than the seed spread, and dedup must not hurt).

    .venv/bin/python benchmarks/demo_bench.py [--seeds 0 1 2] [--workdir benchmarks/_work/demo]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.demo.run import leaderboard_scores  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "_work" / "demo")
    p.add_argument("--samples", type=int, default=2000)
    args = p.parse_args()
    per_seed: dict[int, dict] = {}
    walls = []
    for seed in args.seeds:
        work = args.workdir / f"seed{seed}"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "curate.cli", "demo", "--workdir", str(work), "--seed", str(seed),
                               "--samples", str(args.samples)], capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            return 1
        per_seed[seed] = leaderboard_scores(work)
        print(f"seed {seed}: {walls[-1]:.0f} s", file=sys.stderr)
    recipes = list(next(iter(per_seed.values())))
    tasks = sorted(next(iter(next(iter(per_seed.values())).values())))
    print(f"### `curate demo` over seeds {args.seeds} ({args.samples} samples; wall per seed "
          f"{min(walls):.0f}–{max(walls):.0f} s)\n")
    print("| recipe | " + " | ".join(f"{t} (mean ± sd)" for t in tasks) + " | average (mean ± sd) | per seed (average) |")
    print("|---|" + "---|" * (len(tasks) + 2))
    for r in recipes:
        cells = []
        for t in tasks + ["average"]:
            vals = [100 * (sum(per_seed[s][r].values()) / len(per_seed[s][r]) if t == "average" else per_seed[s][r][t])
                    for s in args.seeds]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}")
        avgs = [100 * sum(per_seed[s][r].values()) / len(per_seed[s][r]) for s in args.seeds]
        print(f"| {r} | " + " | ".join(cells) + " | " + ", ".join(f"{v:.1f}" for v in avgs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
