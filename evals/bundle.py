"""`evaluate bundle RUN --output DIR`: gather what a DataComp filtering-track submission asks for, checked.

DataComp's filtering track takes the subset (a uid file), the number of samples in it, how the model was
trained (scale, samples seen) and its evaluation results, plus a description of the filter. This command
collects those files from a run, checks that they describe the same thing, and writes them whole to DIR with a
`bundle.json` manifest (sha256 of every file). It uploads nothing.

Inputs (the first that exists):
    subset      --subset PATH, RUN/subset.npy
    recipe      --stats PATH, stats.json beside the subset file (what `curate run` writes next to subset.npy)
    training    RUN/info.json (what `train` writes)
    evaluation  --eval-results PATH, RUN/eval_results.jsonl, RUN/evals/eval_results.jsonl

Checks (any failure is an error that names the files): the subset file is a valid DataComp subset file; its row
count equals stats.json's `kept` and its sha256 equals stats.json's `subset_sha256` when stats.json records
them; training finished and saw the scale's samples; the eval results parse. Missing evaluation tasks are not an
error: the manifest says `partial` and lists them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from curate.atomic import write_json
from curate.subset import SubsetFileError, read_subset
from evals.summary import summarize
from evals.tasks import DEFAULT_TASKS, TaskError, load_tasks

FORMAT_VERSION = 1


class BundleError(ValueError):
    """A run whose files are missing or do not agree with each other."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _first(paths: list[Path], what: str, hint: str) -> Path:
    for p in paths:
        if p.is_file():
            return p
    raise BundleError(f"no {what}: looked for {', '.join(str(p) for p in paths)}{hint}")


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return obj


def _read_results(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise BundleError(f"{path}: line {n} is not JSON ({e})") from None
            if not isinstance(row, dict) or "key" not in row or "main_metric" not in row:
                raise BundleError(f"{path}: line {n} lacks 'key' or 'main_metric'")
            rows.append(row)
    return rows


def _unique_rows(arr: np.ndarray) -> int:
    """Distinct uids of a sorted subset (rows listed more than once upsample the same uid)."""
    if len(arr) == 0:
        return 0
    hi, lo = arr["f0"], arr["f1"]
    return int(1 + np.count_nonzero((hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])))


def collect(run: Path, subset: Path | None = None, stats: Path | None = None, eval_results: Path | None = None,
            tasks_path=DEFAULT_TASKS) -> tuple[dict, dict[str, Path]]:
    """(manifest, {bundle file name: source path}); raises BundleError naming what is missing or inconsistent."""
    run = Path(run)
    if not run.is_dir():
        raise BundleError(f"run folder not found: {run}")
    subset_path = _first([Path(subset)] if subset else [run / "subset.npy"], "subset file",
                         "; pass --subset PATH (the subset.npy that `curate run` wrote)")
    stats_path = _first([Path(stats)] if stats else [subset_path.parent / "stats.json"], "filter recipe/stats",
                        "; pass --stats PATH (the stats.json `curate run` wrote beside the subset)")
    info_path = _first([run / "info.json"], "training info", " (written by `train --output RUN`)")
    results_path = _first([Path(eval_results)] if eval_results else
                          [run / "eval_results.jsonl", run / "evals" / "eval_results.jsonl"], "eval results",
                          "; run `evaluate ... --output RUN` or pass --eval-results PATH")

    try:
        arr = read_subset(subset_path)
    except SubsetFileError as e:
        raise BundleError(str(e)) from None
    subset_sha = sha256_file(subset_path)
    stats_doc = _read_json(stats_path)
    info = _read_json(info_path)
    results = _read_results(results_path)
    try:
        tasks = load_tasks(tasks_path)
    except TaskError as e:
        raise BundleError(str(e)) from None
    summary = summarize(results, tasks)

    failures, checks = [], []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok:
            failures.append(f"{name}: {detail}")

    rows = int(len(arr))
    if "kept" in stats_doc:
        check("subset rows = stats kept", stats_doc["kept"] == rows,
              f"{subset_path} has {rows:,} rows, {stats_path} says kept {stats_doc['kept']:,}")
    if stats_doc.get("subset_sha256"):
        check("subset sha256 = stats", stats_doc["subset_sha256"] == subset_sha,
              f"{subset_path} sha256 {subset_sha[:16]}..., {stats_path} records {str(stats_doc['subset_sha256'])[:16]}...")
    check("training finished", info.get("finished") is True,
          f"{info_path}: finished={info.get('finished')!r} (a run still going or killed is not a submission)")
    want = (info.get("protocol") or {}).get("samples_seen")
    seen = info.get("samples_seen")
    if want is not None:
        check("samples seen = scale", seen == want, f"{info_path}: samples_seen={seen!r}, scale {info.get('scale')!r} "
                                                    f"prescribes {want!r}")
    check("eval results present", bool(results), f"{results_path} holds {len(results)} task rows")
    if failures:
        raise BundleError("inconsistent run:\n  " + "\n  ".join(failures))

    files = {"subset.npy": subset_path, "stats.json": stats_path, "info.json": info_path,
             "eval_results.jsonl": results_path}
    non_standard = info.get("non_standard") or {}
    manifest = {
        "format_version": FORMAT_VERSION,
        "run": str(run.resolve()),
        "subset": {"file": "subset.npy", "sha256": subset_sha, "rows": rows, "unique_uids": _unique_rows(arr)},
        "filter": {"filters": stats_doc.get("filters"), "thresholds": stats_doc.get("thresholds"),
                   "pool": stats_doc.get("pool"), "rows_in": stats_doc.get("rows_in")},
        "training": {"scale": info.get("scale"), "samples_seen": seen, "model": (info.get("protocol") or {}).get("model"),
                     "non_standard": non_standard, "standard_protocol": not non_standard},
        "evaluation": {"average": summary["average"], "n_tasks": summary["n_tasks"], "n_scored": summary["n_scored"],
                       "partial": summary["partial"], "missing": summary["missing"],
                       "main_metrics": summary["main_metrics"]},
        "checks": checks,
        "complete": not summary["partial"] and not non_standard,
        "files": {name: {"sha256": subset_sha if name == "subset.npy" else sha256_file(p), "bytes": p.stat().st_size,
                         "source": str(p.resolve())} for name, p in files.items()},
    }
    return manifest, files


def write_bundle(manifest: dict, files: dict[str, Path], output: Path) -> Path:
    """Write the files and bundle.json into a temporary folder beside `output`, then rename it into place.

    An existing `output` is replaced only if it is an earlier bundle (holds bundle.json) or empty.
    """
    output = Path(output)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / "bundle.json").is_file())):
        raise BundleError(f"{output} exists and is not an earlier bundle; choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name, src in files.items():
            shutil.copyfile(src, tmp / name)
            if name != "subset.npy" and sha256_file(tmp / name) != manifest["files"][name]["sha256"]:
                raise BundleError(f"{src} changed while being bundled")
        write_json(tmp / "bundle.json", manifest)
        if output.exists():
            old = output.parent / f".{output.name}.old-{os.getpid()}"
            os.replace(output, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="evaluate bundle",
        description="Collect a DataComp filtering-track submission from a run (subset file and hash, sample count, "
                    "training info, eval results, filter recipe), check it is consistent, write DIR/ with "
                    "bundle.json. Nothing is uploaded.")
    p.add_argument("run", type=Path, help="run folder: info.json (train), eval_results.jsonl (evaluate)")
    p.add_argument("--output", required=True, type=Path, help="bundle folder to write")
    p.add_argument("--subset", type=Path, help="subset file (default RUN/subset.npy)")
    p.add_argument("--stats", type=Path, help="curate's stats.json (default: beside the subset file)")
    p.add_argument("--eval-results", type=Path,
                   help="eval_results.jsonl (default RUN/eval_results.jsonl, then RUN/evals/eval_results.jsonl)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="task list YAML (default: DataComp's 38 tasks)")
    args = p.parse_args(argv)
    try:
        manifest, files = collect(args.run, args.subset, args.stats, args.eval_results, args.tasks)
        write_bundle(manifest, files, args.output)
    except BundleError as e:
        print(f"evaluate bundle: error: {e}", file=sys.stderr)
        return 2
    ev = manifest["evaluation"]
    avg = "n/a" if ev["average"] is None else f"{100 * ev['average']:.2f}"
    print(f"bundle written to {args.output}: {manifest['subset']['rows']:,} samples "
          f"(sha256 {manifest['subset']['sha256'][:12]}...), scale {manifest['training']['scale']}, "
          f"average {avg} over {ev['n_tasks']}/{ev['n_scored']} tasks")
    if ev["partial"]:
        print(f"PARTIAL: {len(ev['missing'])} tasks missing: {', '.join(ev['missing'])}")
    if manifest["training"]["non_standard"]:
        print(f"NON-STANDARD training: {json.dumps(manifest['training']['non_standard'])}")
    return 0
