"""Aggregate per-task results into DataComp's headline: the plain mean of the 38 scored main metrics.

A missing task is never silently dropped: the summary lists it and marks the average as partial.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from evals.tasks import N_SCORED, Task


def read_results(path: str | Path) -> list[dict]:
    """Rows of an eval_results.jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no eval results at {path}")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(results: list[dict], tasks: list[Task]) -> dict:
    """Average over the list's scored tasks (DataComp's list has 38), which are missing, and whether it is partial."""
    by_key = {r["key"]: r for r in results}
    scored = [t for t in tasks if t.scored]
    present, missing = {}, []
    for t in scored:
        r = by_key.get(t.key)
        v = r.get("main_metric") if r else None
        if v is None or (isinstance(v, float) and math.isnan(v)):
            missing.append(t.key)
        else:
            present[t.key] = float(v)
    avg = sum(present.values()) / len(present) if present else None
    return {
        "average": avg,
        "n_tasks": len(present),
        "n_scored": len(scored),
        "partial": len(present) < len(scored),
        "missing": missing,
        "main_metrics": present,
    }


def format_table(results: list[dict], summary: dict) -> str:
    """Plain-text table of main metrics, one task per line, then the average line."""
    lines = [f"{'task':55s} {'metric':22s} {'value':>8s}"]
    for r in results:
        v = r.get("main_metric")
        vs = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:8.4f}"
        lines.append(f"{r['key']:55s} {str(r.get('metric_name')):22s} {vs:>8s}")
    avg = summary["average"]
    tag = f"PARTIAL: {summary['n_tasks']}/{summary['n_scored']} tasks" if summary["partial"] else f"{summary['n_tasks']} tasks"
    lines.append(f"{'average':55s} {tag:22s} {'n/a' if avg is None else format(avg, '8.4f'):>8s}")
    if summary["missing"]:
        lines.append("missing: " + ", ".join(summary["missing"]))
    return "\n".join(lines)
