"""`evaluate leaderboard`: put runs side by side, ranked by the 38-task average, next to DataComp's baselines.

Only runs that can be compared are ranked together. A run is a folder holding eval_results.jsonl (from
`evaluate`); what it trained (scale, non-standard options, subset size) comes from evals.run_info. Runs fall
into sections, each saying why a run is in it:
- standard: DataComp's protocol and every scored task of the list, ranked, with DataComp's baselines;
- non-standard: trained with options beyond the protocol (`train --samples`, `--siglip`, ...), ranked only
  against runs with the same options (one section per set of options);
- partial: fewer tasks than the list scores (0 of 38 included), listed apart and not ranked.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import yaml

from curate.atomic import atomic_open
from curate.page import esc, page
from evals.run_info import RunInfoError, run_info
from evals.summary import read_results, summarize
from evals.tasks import DEFAULT_TASKS, TaskError, load_tasks

BASELINES = Path(__file__).resolve().parents[1] / "configs" / "evals" / "baselines.yaml"
RETRIEVAL_KEYS = ("retrieval/flickr30k", "retrieval/mscoco_2014_5k_test_image_text_retrieval", "misc/winogavil")
COLUMNS = ("rank", "run", "scale", "subset_size", "imagenet", "retrieval", "average", "tasks")
STANDARD, PARTIAL = "standard", "partial"


def options_text(options: dict) -> str:
    """Non-standard options as `name=value, ...`, sorted by name (the same text for the same options)."""
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(options.items()))


def run_row(run: Path, tasks) -> dict:
    """One leaderboard row: ImageNet top-1, retrieval mean (DataComp's Flickr/MSCOCO/WinoGAViL group), average,
    the section it belongs in and why."""
    try:
        results = read_results(run / "eval_results.jsonl")
    except ValueError as e:
        raise RunInfoError(f"{run / 'eval_results.jsonl'}: a line is not JSON ({e})") from None
    summary = summarize(results, tasks)
    mm = summary["main_metrics"]
    retr = [mm[k] for k in RETRIEVAL_KEYS if k in mm]
    info = run_info(run)
    options = info["non_standard"]
    why = []
    if summary["partial"]:
        why.append(f"{summary['n_tasks']} of {summary['n_scored']} tasks"
                   + (": no task scored" if not summary["n_tasks"] else f" ({len(summary['missing'])} missing)"))
    if options:
        why.append(f"non-standard: {options_text(options)}")
    section = PARTIAL if summary["partial"] else f"non-standard: {options_text(options)}" if options else STANDARD
    return {"run": info["name"], "path": str(run), "scale": info["scale"], "subset_size": info["subset_size"],
            "subset_size_source": info["subset_size_source"], **{f"task:{k}": v for k, v in mm.items()},
            "imagenet": mm.get("imagenet1k"), "retrieval": sum(retr) / len(retr) if retr else None,
            "retrieval_partial": 0 < len(retr) < len(RETRIEVAL_KEYS),
            "average": summary["average"], "partial": summary["partial"], "n_tasks": summary["n_tasks"],
            "n_scored": summary["n_scored"], "non_standard": options, "section": section, "why": "; ".join(why),
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


def by_average(r: dict) -> tuple:
    """Best average first; rows without one last."""
    return r["average"] is None, -(r["average"] or 0.0)


def build(runs: list[Path], tasks_path=DEFAULT_TASKS, scales: list[str] | None = None) -> list[dict]:
    """All rows in display order: standard runs ranked by average (best first), then DataComp's reference rows
    by ImageNet; each non-standard section ranked; then partial runs, unranked (most tasks, then average)."""
    tasks = load_tasks(tasks_path)
    rows = [run_row(Path(r), tasks) for r in runs]
    out = []
    standard = sorted((r for r in rows if r["section"] == STANDARD), key=by_average)
    others = sorted({r["section"] for r in rows} - {STANDARD, PARTIAL})
    for section in [STANDARD, *others]:
        ranked = standard if section == STANDARD else sorted((r for r in rows if r["section"] == section), key=by_average)
        for i, r in enumerate(ranked, 1):
            r["rank"] = i
        out += ranked
        if section == STANDARD:
            scales = scales if scales is not None else sorted({r["scale"] for r in rows if r["scale"]})
            refs = sorted(baseline_rows(scales), key=lambda r: (r["scale"], -r["imagenet"]))
            for r in refs:
                r.update(rank="", section=STANDARD, why="")
            out += refs
    partial = sorted((r for r in rows if r["section"] == PARTIAL), key=lambda r: (-r["n_tasks"], *by_average(r)))
    for r in partial:
        r["rank"] = ""
    return out + partial


def _value(row: dict, col: str) -> str:
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
           "retrieval": "retrieval", "average": "average", "tasks": "tasks", "section": "section", "why": "why apart"}
NO_STANDARD_RUN = "No run is standard and complete."
NOTE = ("Scores in %. * = average over fewer tasks than the full set (partial). Subset size: samples in the data the "
        "run trained on. DataComp rows: published ImageNet only.")


def columns_for(rows: list[dict]) -> tuple[str, ...]:
    """DataComp's columns; for a small task list of its own (no ImageNet), one column per task instead."""
    task_cols = sorted({k for r in rows for k in r if k.startswith("task:")})
    if any(r.get("imagenet") is not None for r in rows) or not task_cols or len(task_cols) > 6:
        return COLUMNS
    for c in task_cols:
        HEADERS.setdefault(c, c[len("task:"):])
    return ("rank", "run", "scale", "subset_size", *task_cols, "average", "tasks")


def sections(rows: list[dict], cols: tuple[str, ...]) -> list[tuple[str, str, str, tuple[str, ...], list[dict]]]:
    """(section, title, what it means, its columns, its rows) in display order; the standard section comes first,
    even when empty."""
    n = next((r["n_scored"] for r in rows if not r["reference"]), 0)
    groups: dict[str, list[dict]] = {STANDARD: []}
    for r in rows:
        groups.setdefault(r["section"], []).append(r)
    return [(section, *_section_text(section, n), _section_columns(section, cols), srows) for section, srows in groups.items()]


def _section_text(section: str, n: int) -> tuple[str, str]:
    if section == STANDARD:
        return "Standard runs, ranked", (f"DataComp's training protocol and all {n} scored tasks, with DataComp's "
                                         "published baselines for the runs' scales.")
    if section == PARTIAL:
        return "Partial runs, not ranked", (f"Fewer than {n} tasks scored: an average over other tasks does not "
                                            "compare. Evaluate the missing tasks to rank them.")
    return (f"Non-standard runs ({section[len('non-standard: '):]}), ranked among themselves",
            "Trained with options beyond DataComp's protocol: ranked only against runs with the same options.")


def _section_columns(section: str, cols: tuple[str, ...]) -> tuple[str, ...]:
    if section == STANDARD:
        return cols
    return (*(c for c in cols if not (section == PARTIAL and c == "rank")), "why")


def _cell(row: dict, col: str) -> str:
    if col in ("section", "why"):
        return str(row.get(col) or "")
    return _value(row, col)


def render(rows: list[dict], fmt: str = "md") -> str:
    cols = columns_for(rows)
    if fmt == "csv":  # one table; the section and the reason a run is set apart as columns
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([HEADERS[c] for c in (*cols, "section", "why")])
        for r in rows:
            w.writerow([_cell(r, c) for c in (*cols, "section", "why")])
        return buf.getvalue()
    if fmt == "html":
        return _html(rows, cols)
    parts = []
    for _, title, note, scols, srows in sections(rows, cols):
        table = _md_table(scols, srows) if srows else NO_STANDARD_RUN
        parts.append(f"## {title}\n\n{note}\n\n{table}\n")
    return "\n".join(parts) + f"\n{NOTE}\n"


def _md_table(cols: tuple[str, ...], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for r in rows])


def _html_table(cols: tuple[str, ...], rows: list[dict]) -> str:
    """One section's table; a subset size's cell names where the number came from (its tooltip)."""
    head = "".join(f"<th{' class=text' if c in ('why', 'run') else ''}>{esc(HEADERS[c])}</th>" for c in cols)
    trs = []
    for r in rows:
        tds = []
        for c in cols:
            attrs = " class=text" if c in ("why", "run") else ""
            if c == "subset_size" and r.get("subset_size_source"):
                attrs += f" title='from {esc(r['subset_size_source'])}'"
            tds.append(f"<td{attrs}>{esc(_cell(r, c))}</td>")
        trs.append(f"<tr{' class=reference' if r['reference'] else ''}>{''.join(tds)}</tr>")
    return f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(trs) + "\n</tbody></table></div>"


def _html(rows: list[dict], cols: tuple[str, ...]) -> str:
    """A whole page in the filter report's style (curate.page): one table per section."""
    runs = [r for r in rows if not r["reference"]]
    n = runs[0]["n_scored"] if runs else 0
    body = [f"<h1>Leaderboard: {len(runs)} run{'s' * (len(runs) != 1)} on {n} scored tasks</h1>"]
    body += [f"<div class=warn>⚠ {esc(r['run'])} (<code>{esc(r['path'])}</code>): {esc(r['why'])}; listed apart, "
             "not ranked</div>" for r in runs if r["n_tasks"] == 0]
    for section, title, note, scols, srows in sections(rows, cols):
        table = _html_table(scols, srows) if srows else f"<p>{NO_STANDARD_RUN}</p>"
        body.append(f"<section class=board data-section='{esc(section)}'><h2>{esc(title)}</h2>"
                    f"<p class=note>{esc(note)}</p>{table}</section>")
    body.append(f"<p class=note>{esc(NOTE)}</p>")
    return page("evaluate leaderboard", "\n".join(body))


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
        rows = build(args.runs, args.tasks, args.scale)
    except (FileNotFoundError, TaskError, RunInfoError) as e:
        print(f"evaluate leaderboard: error: {e}", file=sys.stderr)
        return 2
    for r in rows:
        if r["why"]:
            print(f"evaluate leaderboard: {r['path']}: listed apart: {r['why']}", file=sys.stderr)
    text = render(rows, args.format)
    if args.output:
        with atomic_open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
