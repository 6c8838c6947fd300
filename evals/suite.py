"""Run a task list against one model and write the results whole.

The model is loaded once; each task whose folder exists under the eval root is dispatched by type.
eval_results.jsonl is rewritten atomically after every task, so a killed run leaves the tasks done so far.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from curate.atomic import atomic_open, write_json
from evals.data import open_eval_set
from evals.groups import METADATA_FIELDS, group_metrics
from evals.retrieval import evaluate_retrieval
from evals.summary import format_table, summarize
from evals.tasks import Task
from evals.winogavil import evaluate_winogavil
from evals.zeroshot import evaluate_classification


class UnsupportedTask(NotImplementedError):
    """A task type whose metric this evaluator does not compute yet."""


def evaluate_task(task: Task, model, preprocess, tokenizer, eval_dir, device="cpu", batch_size=64, workers=0) -> dict:
    """Metrics of one task; the main metric must be among them."""
    es = open_eval_set(task.path(eval_dir), kind=task.type)
    if task.type == "retrieval":
        metrics = evaluate_retrieval(model, preprocess, tokenizer, es, device, batch_size, workers)
    elif task.type == "winogavil":
        metrics = evaluate_winogavil(model, preprocess, tokenizer, es, device, batch_size, workers)
    elif task.type == "classification":
        metrics, _ = evaluate_classification(model, preprocess, tokenizer, es, device, batch_size, workers)
    elif task.type in ("wilds", "fairness") and task.key in METADATA_FIELDS:
        metrics, (logits, target, extra) = evaluate_classification(model, preprocess, tokenizer, es, device,
                                                                   batch_size, workers, fields=("cls", "npy"))
        metrics.update(group_metrics(task.key, logits, target, extra[0]))
    else:
        raise UnsupportedTask(f"task type {task.type!r} ({task.key}) is not implemented yet")
    if task.main_metric and task.main_metric not in metrics:
        raise UnsupportedTask(f"{task.key}: main metric {task.main_metric!r} is not computed yet "
                              f"(have {', '.join(sorted(metrics))})")
    return metrics


def _clean(v):
    """JSON has no NaN: write it as null (acc5 of a task with fewer than 5 classes)."""
    return None if isinstance(v, float) and math.isnan(v) else v


def write_results(path: Path, rows: list[dict]) -> None:
    with atomic_open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def run_suite(tasks: list[Task], model, preprocess, tokenizer, eval_dir, output, device="cpu", batch_size=64,
              workers=0, suite: list[Task] | None = None, log=print, done: list[dict] | None = None
              ) -> tuple[list[dict], dict]:
    """Evaluate every task whose folder exists; returns (rows, summary) and writes both under `output`.

    The summary is taken over `suite` (default: `tasks`), so running a few tasks of DataComp's list still
    reports the others as missing rather than calling a 3-task mean complete. `done` are result rows kept
    from an earlier run of the same model: they are written first and their tasks are not run again.
    """
    output = Path(output)
    rows, skipped = list(done or []), []
    finished = {r["key"] for r in rows}
    for task in tasks:
        if task.key in finished:
            continue
        if not task.path(eval_dir).is_dir():
            skipped.append(task.key)
            continue
        t0 = time.perf_counter()
        try:
            metrics = evaluate_task(task, model, preprocess, tokenizer, eval_dir, device, batch_size, workers)
        except UnsupportedTask as e:
            log(f"skip {task.key}: {e}")
            skipped.append(task.key)
            continue
        dt = time.perf_counter() - t0
        main = metrics.get(task.main_metric) if task.main_metric else None
        rows.append({"key": task.key, "dataset": task.dataset, "metric_name": task.main_metric,
                     "main_metric": _clean(main), "scored": task.scored, "seconds": round(dt, 3),
                     "metrics": {k: _clean(v) for k, v in metrics.items()}})
        write_results(output / "eval_results.jsonl", rows)
        log(f"{task.key}: {task.main_metric}={main} ({dt:.1f}s)")
    if not rows:
        write_results(output / "eval_results.jsonl", rows)
    summary = summarize(rows, suite or tasks)
    summary["not_run"] = skipped
    write_json(output / "summary.json", summary)
    log(format_table(rows, summary))
    return rows, summary
