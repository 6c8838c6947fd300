"""`curate demo`: DataComp in miniature, offline, on a laptop: the whole loop, and a ranking that is real.

1. a pool is generated with the noise real pools have, and served on 127.0.0.1;
2. `curate download` fetches it (img2dataset);
3. `train` fits a small scoring CLIP on a separate clean set (as Data Filtering Networks do);
4. `curate stage` computes pHash, sha256 and that model's CLIP scores; `curate dedup` finds near-duplicates;
5. `curate run` applies each recipe and reshards its subset;
6. `train` trains each subset at the same fixed budget; `evaluate` scores each on generated zero-shot tasks;
7. `evaluate leaderboard` ranks the recipes.

Every step is the real command line, run as a subprocess and printed, so a user can repeat any of them; each
step's full output is in WORKDIR/logs/. Everything it makes stays in WORKDIR.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from curate.atomic import atomic_path
from curate.demo.evalsets import write_eval_sets
from curate.demo.server import LoopbackImageServer
from curate.demo.world import build_world, write_clean_set

MODEL = "datacomp-tiny"
TAG = "demo"  # `curate stage --clip-tag demo` -> clip_demo_similarity_score

#: recipe name -> `curate run` filter arguments
RECIPES = {
    "no_filter": ["--filter", "no_filter"],
    "basic": ["--filter", "basic"],
    "clip_score_30pct": ["--filter", "clip_score", "--arch", TAG, "--fraction", "0.3"],
    "phash_dedup": ["--filter", "dedup"],
    "clip_score_30pct+dedup": ["--filter", "dedup", "--filter", "clip_score", "--arch", TAG, "--fraction", "0.3"],
}

PROGRAMS = {"curate": "curate.cli", "train": "train.cli", "evaluate": "evals.cli"}


class DemoStepError(RuntimeError):
    """A step of the demo failed; its log names what went wrong."""


class Steps:
    """Runs each step as its real command line, prints it, and keeps its output in logs/."""

    def __init__(self, work: Path):
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def __call__(self, program: str, *args, quiet: bool = True) -> str:
        self.n += 1
        args = [str(a) for a in args]
        shown = " ".join(shlex.quote(a.replace(str(self.work) + "/", "")) for a in [program, *args])
        print(f"  $ {shown}", flush=True)
        log = self.logs / f"{self.n:02d}-{program}-{args[0] if args else ''}.log"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", PROGRAMS[program], *args], cwd=self.work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log.write_text(proc.stdout)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise DemoStepError(f"`{shown}` failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
        if not quiet:
            for line in proc.stdout.strip().splitlines():
                if not line.startswith(("WARNING", "  warnings.warn", "/")):
                    print(f"    {line}")
        print(f"    ({time.perf_counter() - t0:.0f} s, log: {log.relative_to(self.work)})", flush=True)
        return proc.stdout


def run_demo(workdir: str = "demo_out", samples: int = 2000, seed: int = 0, processes: int = 2,
             clean_samples: int = 1500, train_samples: int | None = None, recipes: list[str] | None = None,
             scorer_samples: int | None = None) -> int:
    """The whole loop; returns 0 when every step ran and every count reconciled."""
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    step = Steps(work)
    budget = ["--samples", str(train_samples)] if train_samples else []
    scorer_budget = ["--samples", str(scorer_samples)] if scorer_samples else []
    procs = ["--processes", str(processes)]
    chosen = {k: RECIPES[k] for k in (recipes or RECIPES)}

    print(f"[1/7] generating a pool of {samples} image-text pairs (seed {seed}), a clean set of {clean_samples} "
          f"for the scoring model, and zero-shot eval sets", flush=True)
    write_clean_set(work / "clean_shards", clean_samples, seed + 1)
    tasks = write_eval_sets(work / "evals", seed=seed + 2)
    with LoopbackImageServer(work / "web") as server:
        table = build_world(work / "web", samples, seed, server.url)
        with atomic_path(work / "url_list.parquet") as tmp:
            pq.write_table(table, tmp)
        print(f"[2/7] downloading it from {server.base} (only http(s) is fetched; the rest is counted; "
              "--allow-private because this server is on loopback, which is refused by default)", flush=True)
        step("curate", "download", "--url-list", work / "url_list.parquet", "--pool", work / "pool", "--image-size", 128,
             "--shard-size", 500, "--threads", 16, "--timeout", 5, "--allow-private", *procs, quiet=False)
    download = json.loads((work / "pool" / "download_stats.json").read_text())

    print("[3/7] training the scoring CLIP on the clean set", flush=True)
    step("train", "--scale", "tiny", "--data", work / "clean_shards", "--output", work / "scorer", "--seed", seed,
         "--workers", 1, "--no-progress", *scorer_budget)

    print("[4/7] signals: pHash, sha256 and the scoring model's CLIP score; then pHash near-duplicates", flush=True)
    step("curate", "stage", "--pool", work / "pool", "--signals", "phash,sha256,clip", "--model", MODEL,
         "--pretrained", work / "scorer" / "checkpoints" / "final.pt", "--clip-tag", TAG, "--no-progress", *procs, quiet=False)
    step("curate", "dedup", "--pool", work / "pool", "--method", "phash", "--max-distance", 2, quiet=False)

    print(f"[5/7] filtering with {len(chosen)} recipes", flush=True)
    reconciled = download["reconciled"]
    for name, args in chosen.items():
        out = step("curate", "run", "--pool", work / "pool", *args, "--output", work / "subsets" / name,
                   "--shard-size", 250, "--no-compute", *procs)
        reconciled &= "reconcile: True" in out

    print("[6/7] training each subset at the same fixed budget (the `tiny` scale) and evaluating it", flush=True)
    runs = []
    for name in chosen:
        run = work / "runs" / name
        step("train", "--scale", "tiny", "--data", work / "subsets" / name / "shards", "--output", run, "--seed", seed,
             "--workers", 1, "--no-progress", *budget)
        (run / "subset.npy").write_bytes((work / "subsets" / name / "subset.npy").read_bytes())
        step("evaluate", "--checkpoint", run / "checkpoints" / "final.pt", "--model", MODEL, "--eval-dir", work / "evals",
             "--tasks", tasks, "--output", run, "--device", "cpu", "--workers", 1)
        runs.append(run)

    print("[7/7] the leaderboard (same model, same budget; only the data differs)", flush=True)
    step("evaluate", "leaderboard", *runs, "--tasks", tasks, "--format", "html", "--output", work / "leaderboard.html")
    table_md = step("evaluate", "leaderboard", *runs, "--tasks", tasks, "--format", "md")
    print(table_md)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; open {work / 'leaderboard.html'} and "
          f"{work / 'subsets' / 'clip_score_30pct' / 'report.html'}; everything is under {work}")
    return 0 if reconciled else 1


def leaderboard_scores(work: str | Path) -> dict[str, dict[str, float]]:
    """Each run's main metrics, read back from its eval_results.jsonl (for the benchmark and the tests)."""
    out = {}
    for run in sorted((Path(work) / "runs").iterdir()):
        rows = [json.loads(line) for line in (run / "eval_results.jsonl").read_text().splitlines() if line.strip()]
        out[run.name] = {r["key"]: r["main_metric"] for r in rows}
    return out
