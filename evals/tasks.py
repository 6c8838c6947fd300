"""The evaluation task list: which tasks exist, where their data lives, and which metric scores them.

Kept as YAML (configs/evals/datacomp.yaml) so a user can run a subset or add a task without code;
this module only reads and checks it, so a typo fails before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_TASKS = Path(__file__).resolve().parents[1] / "configs" / "evals" / "datacomp.yaml"
TASK_TYPES = ("classification", "retrieval", "winogavil", "wilds", "fairness")
N_SCORED = 38  # DataComp's headline averages exactly this many tasks


class TaskError(ValueError):
    """A task list or task name that cannot be used."""


@dataclass(frozen=True)
class Task:
    key: str
    dataset: str
    folder: str
    type: str
    main_metric: str | None
    scored: bool

    def path(self, eval_dir: str | Path) -> Path:
        return Path(eval_dir) / self.folder


def folder_name(key: str) -> str:
    """DataComp's downloader layout: `wds_{key with / replaced by -}_test`, fairness tasks without their prefix
    (DataComp's download_evalsets.py and eval_utils/fairness_eval.py both use `wds_geode_test`)."""
    if key.startswith("fairness/"):
        key = key.split("/", 1)[1]
    return f"wds_{key.replace('/', '-')}_test"


def load_tasks(path: str | Path = DEFAULT_TASKS) -> list[Task]:
    """Read and validate a task list; errors name the file and the offending entry."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task list not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)  # never constructs Python objects: a !!python tag is an error
    except yaml.YAMLError as e:
        raise TaskError(f"{path}: {_yaml_problem(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: cannot read the task list ({e})") from None
    entries = doc.get("tasks") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TaskError(f"{path}: expected a top-level 'tasks:' list")
    tasks, seen = [], set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "key" not in e:
            raise TaskError(f"{path}: entry {i} has no 'key'")
        key = str(e["key"])
        if key in seen:
            raise TaskError(f"{path}: task {key!r} listed twice")
        seen.add(key)
        ttype = e.get("type", "classification")
        if ttype not in TASK_TYPES:
            raise TaskError(f"{path}: task {key!r} has unknown type {ttype!r} (one of {', '.join(TASK_TYPES)})")
        main = e.get("main_metric", "acc1")
        scored = bool(e.get("scored", main is not None))
        if scored and not main:
            raise TaskError(f"{path}: scored task {key!r} needs a main_metric")
        tasks.append(Task(key=key, dataset=str(e.get("dataset", key)), folder=str(e.get("folder", folder_name(key))),
                          type=ttype, main_metric=main, scored=scored))
    return tasks


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line from a YAML error: where (line:column) and what (its messages run over several lines)."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    if "python/" in what or "constructor for the tag" in what:
        what += " (Python tags are refused: a task list holds plain values only)"
    return f"{where}not valid YAML: {what}"


def select(tasks: list[Task], keys: list[str] | None) -> list[Task]:
    """Keep only `keys` (in list order); an unknown key is an error that lists the known ones."""
    if not keys:
        return tasks
    by_key = {t.key: t for t in tasks}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise TaskError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(by_key)}")
    wanted = set(keys)
    return [t for t in tasks if t.key in wanted]
