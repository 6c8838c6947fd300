"""`evaluate leaderboard`: put runs side by side, ranked by the 38-task average, next to DataComp's baselines.

A run is a folder holding eval_results.jsonl (from `evaluate`), optionally info.json ({"name", "scale",
"subset_size"} or "num_samples") and/or subset.npy (its row count is the subset size).
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml

from curate.atomic import atomic_open
from evals.summary import read_results, summarize
from evals.tasks import DEFAULT_TASKS, load_tasks

BASELINES = Path(__file__).resolve().parents[1] / "configs" / "evals" / "baselines.yaml"
RETRIEVAL_KEYS = ("retrieval/flickr30k", "retrieval/mscoco_2014_5k_test_image_text_retrieval", "misc/winogavil")
COLUMNS = ("rank", "run", "scale", "subset_size", "imagenet", "retrieval", "average", "tasks")


def _info(run: Path) -> dict:
    info = {}
    if (run / "info.json").is_file():
        info = json.loads((run / "info.json").read_text())
    size = info.get("subset_size", info.get("num_samples", info.get("n_samples")))
    if size is None and (run / "subset.npy").is_file():
        size = int(np.load(run / "subset.npy", mmap_mode="r").shape[0])
    return {"name": info.get("name", run.name), "scale": info.get("scale"), "subset_size": size}


def run_row(run: Path, tasks) -> dict:
    """One leaderboard row: ImageNet top-1, retrieval mean (DataComp's Flickr/MSCOCO/WinoGAViL group), average."""
    results = read_results(run / "eval_results.jsonl")
    summary = summarize(results, tasks)
    mm = summary["main_metrics"]
    retr = [mm[k] for k in RETRIEVAL_KEYS if k in mm]
    info = _info(run)
    return {"run": info["name"], "scale": info["scale"], "subset_size": info["subset_size"], **{f"task:{k}": v for k, v in mm.items()},
            "imagenet": mm.get("imagenet1k"), "retrieval": sum(retr) / len(retr) if retr else None,
            "retrieval_partial": 0 < len(retr) < len(RETRIEVAL_KEYS),
            "average": summary["average"], "partial": summary["partial"],
            "tasks": f"{summary['n_tasks']}/{summary['n_scored']}", "reference": False}


def baseline_rows(scales: list[str], path: Path = BASELINES) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    rows = []
    for scale in scales:
        if scale not in doc["scales"]:
            continue
        i = doc["scales"].index(scale)
        for name, values in doc["imagenet"].items():
            if values[i] is not None:
                rows.append({"run": f"DataComp: {name}", "scale": scale, "subset_size": None,
                             "imagenet": values[i] / 100.0, "retrieval": None, "retrieval_partial": False,
                             "average": None, "partial": False, "tasks": "", "reference": True})
    return rows


def build(runs: list[Path], tasks_path=DEFAULT_TASKS, scales: list[str] | None = None) -> list[dict]:
    """Runs sorted by average (best first, runs without one last), then reference rows by ImageNet."""
    tasks = load_tasks(tasks_path)
    rows = [run_row(Path(r), tasks) for r in runs]
    rows.sort(key=lambda r: (r["average"] is None, -(r["average"] or 0.0)))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    scales = scales if scales is not None else sorted({r["scale"] for r in rows if r["scale"]})
    refs = sorted(baseline_rows(scales), key=lambda r: (r["scale"], -r["imagenet"]))
    for r in refs:
        r["rank"] = ""
    return rows + refs


def _cell(row: dict, col: str) -> str:
    v = row.get(col)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–" if row["reference"] and col not in ("scale",) else ""
    if col in ("imagenet", "retrieval", "average") or col.startswith("task:"):
        star = "*" if (col == "average" and row["partial"]) or (col == "retrieval" and row["retrieval_partial"]) else ""
        return f"{100 * v:.1f}{star}"
    if col == "subset_size":
        return f"{v:,}"
    return str(v)


HEADERS = {"rank": "#", "run": "run", "scale": "scale", "subset_size": "subset size", "imagenet": "ImageNet",
           "retrieval": "retrieval", "average": "average", "tasks": "tasks"}
NOTE = "Scores in %. * = average over fewer tasks than the full set (partial). DataComp rows: published ImageNet only."


def columns_for(rows: list[dict]) -> tuple[str, ...]:
    """DataComp's columns; for a small task list of its own (no ImageNet), one column per task instead."""
    task_cols = sorted({k for r in rows for k in r if k.startswith("task:")})
    if any(r.get("imagenet") is not None for r in rows) or not task_cols or len(task_cols) > 6:
        return COLUMNS
    for c in task_cols:
        HEADERS.setdefault(c, c[len("task:"):])
    return ("rank", "run", "scale", "subset_size", *task_cols, "average", "tasks")


def render(rows: list[dict], fmt: str = "md") -> str:
    COLUMNS = columns_for(rows)  # noqa: N806 - shadows the module default for this table
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([HEADERS[c] for c in COLUMNS])
        for r in rows:
            w.writerow([_cell(r, c) for c in COLUMNS])
        return buf.getvalue()
    if fmt == "html":
        head = "".join(f"<th>{html.escape(HEADERS[c])}</th>" for c in COLUMNS)
        body = "\n".join("<tr" + (' class="reference"' if r["reference"] else "") + ">"
                         + "".join(f"<td>{html.escape(_cell(r, c))}</td>" for c in COLUMNS) + "</tr>" for r in rows)
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n<p>{html.escape(NOTE)}</p>\n"
    lines = ["| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + f"\n\n{NOTE}\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="evaluate leaderboard",
                                description="Rank runs (folders with eval_results.jsonl) by DataComp's 38-task "
                                            "average, with DataComp's published baselines as reference rows.")
    p.add_argument("runs", nargs="+", type=Path, help="run folders, each holding eval_results.jsonl")
    p.add_argument("--format", choices=("md", "csv", "html"), default="md", help="table format (default md)")
    p.add_argument("--scale", nargs="*", default=None,
                   help="scales whose baselines to show (default: the scales named in the runs' info.json)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="task list YAML (default: DataComp's 38 tasks)")
    p.add_argument("--output", type=Path, help="write the table here instead of stdout")
    args = p.parse_args(argv)
    try:
        text = render(build(args.runs, args.tasks, args.scale), args.format)
    except FileNotFoundError as e:
        print(f"evaluate leaderboard: error: {e}", file=sys.stderr)
        return 2
    if args.output:
        with atomic_open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
