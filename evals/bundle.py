"""`evaluate bundle RUN --output DIR`: a DataComp filtering-track submission gathered from a run, checked.

DataComp's `evaluate.py --submit` uploads three things to a Hugging Face repo, under `{scale}_scale/`:
`results.jsonl` (its eval_results.jsonl), `checkpoint.pt` and `samples/<subset file name>`, and sends a form
(method name, author, email, scale, model, dataset size, batch size, learning rate, each task's main metric).
This command writes exactly that, ready to upload as it is, and first checks that the pieces belong together:

    DIR/{scale}_scale/results.jsonl          DataComp's rows: {"key", "dataset", "metrics": {..., "main_metric"}}
    DIR/{scale}_scale/checkpoint.pt          the run's final weights (open_clip loads them)
    DIR/{scale}_scale/samples/<subset>.npy   the subset file (np.load: a sorted u8,u8 array of uid halves)
    DIR/submission.json                      the form's fields, as evaluate.py's submit_to_firebase sends them
    DIR/provenance/                          info.json (train), stats.json (curate run), eval_model.json
                                             (evaluate), and the model's config when it is not open_clip's
    DIR/bundle.json                          sha256 of every file, the checks and what ties them together

Checks (every failure is listed, one line each, and nothing is written):
    the subset file is a valid subset file, and is the one curate's stats.json counts and hashes;
    it is what the run trained on: its sha256 equals the one `train` recorded from the reshard's
      reshard_stats.json, or its uids hash to the trained shards' uid multiset (info.json `data_source`);
    training finished, on the scale's numbers in configs/scales.yaml (samples seen, batch, model, optimiser),
      with no non-standard option (`--allow-non-standard` writes such a bundle, marked as not standard);
    the checkpoint is the run's final weights and the one the results were computed with (eval_model.json).
Missing evaluation tasks are not an error: the manifest says `partial` and lists them. Nothing is uploaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from curate.atomic import atomic_open, write_json
from curate.subset import SubsetFileError, read_subset
from evals.summary import summarize
from evals.tasks import DEFAULT_TASKS, TaskError, load_tasks

FORMAT_VERSION = 2
TRACK = "filtering"
DATACOMP_SCALES = ("small", "medium", "large", "xlarge")  # the leaderboard's (debug and tiny are not ranked)
MODEL_RECORD = "eval_model.json"  # evals.cli.MODEL_RECORD, beside eval_results.jsonl


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


def _unique_rows(arr) -> int:
    """Distinct uids of a sorted subset (rows listed more than once upsample the same uid)."""
    if len(arr) == 0:
        return 0
    hi, lo = arr["f0"], arr["f1"]
    return int(1 + ((hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])).sum())


def datacomp_rows(results: list[dict], tasks) -> list[dict]:
    """Our result rows as DataComp's evaluate.py writes them: key, dataset name, metrics with main_metric inside,
    in the task list's order (the leaderboard reads `metrics.main_metric` by dataset name)."""
    by_key = {r["key"]: r for r in results}
    rows = []
    for t in tasks:
        r = by_key.get(t.key)
        if r is not None:
            rows.append({"key": t.key, "dataset": t.dataset,
                         "metrics": {**(r.get("metrics") or {}), "main_metric": r.get("main_metric")}})
    return rows


def _subset_path(run: Path, subset: Path | None, source: dict) -> Path:
    """--subset, else RUN/subset.npy, else the subset file the run's reshard was made from."""
    if subset:
        return _first([Path(subset)], "subset file", "")
    candidates = [run / "subset.npy"]
    if source.get("subset_file"):
        candidates.append(Path(source["subset_file"]))
    return _first(candidates, "subset file", "; pass --subset PATH (the subset.npy that `curate run` wrote)")


def _trained_on(source: dict | None, subset_path: Path, subset_sha: str, arr, info_path: Path) -> tuple[bool, str, str]:
    """(matches, how, one-line detail): is the subset file what the run's data_source says it trained on?"""
    from train.provenance import uid_multiset_sha256

    if not source:
        return False, "none", (f"{info_path} does not record what the run trained on (no data_source: trained "
                               f"before `train` recorded it); train again to bundle it")
    if source.get("kind") == "subset":
        want = source.get("subset_sha256")
        return want == subset_sha, "subset_sha256", (
            f"the run trained on the reshard of subset sha256 {want} ({source.get('reshard_stats')}); "
            f"{subset_path} has sha256 {subset_sha}")
    if source.get("kind") == "uid_multiset":
        want, got = source.get("uid_multiset_sha256"), uid_multiset_sha256(arr)
        return want == got, "uid_multiset_sha256", (
            f"the run trained on {source.get('samples'):,} samples whose uid multiset has sha256 {want}; "
            f"{subset_path}'s {len(arr):,} rows hash to {got}")
    return False, "unverified", f"{info_path}: cannot tell what the run trained on ({source.get('reason')})"


def protocol_departures(info: dict) -> tuple[dict, list[str]]:
    """(the scale's numbers from configs/scales.yaml, how the run departed from them: one line each)."""
    from train.scales import UnknownScale, get_scale

    try:
        scale = get_scale(str(info.get("scale")))
    except UnknownScale as e:
        return {}, [str(e)]
    want = dataclasses.asdict(scale)
    ran = info.get("protocol") or {}
    out = []
    seen = info.get("samples_seen")
    if seen != scale.samples_seen:
        out.append(f"the run saw {seen!r} samples; scale {scale.name} prescribes {scale.samples_seen:,}")
    for field, value in want.items():
        if field not in ("name", "samples_seen") and ran.get(field) != value:
            out.append(f"{field}: the run used {ran.get(field)!r}, scale {scale.name} prescribes {value!r}")
    for option, value in (info.get("non_standard") or {}).items():
        if option not in ("samples_seen", "batch_size_per_rank", "model"):  # reported above through the protocol
            out.append(f"non-standard option {option}={value!r}")
    return want, out


def collect(run: Path, subset: Path | None = None, stats: Path | None = None, eval_results: Path | None = None,
            tasks_path=DEFAULT_TASKS, checkpoint: Path | None = None, allow_non_standard: bool = False,
            form: dict | None = None) -> tuple[dict, dict, dict[str, Path]]:
    """(manifest, submission form, {bundle path: source path}); raises BundleError listing every problem."""
    from train.checkpoint import CheckpointError, load
    from train.scales import MODELS_DIR

    run = Path(run)
    if not run.is_dir():
        raise BundleError(f"run folder not found: {run}")
    info_path = _first([run / "info.json"], "training info", " (written by `train --output RUN`)")
    info = _read_json(info_path)
    source = info.get("data_source") or {}
    subset_path = _subset_path(run, subset, source)
    stats_path = _first([Path(stats)] if stats else [subset_path.parent / "stats.json"], "filter recipe/stats",
                        "; pass --stats PATH (the stats.json `curate run` wrote beside the subset)")
    ckpt_path = _first([Path(checkpoint)] if checkpoint else [run / "checkpoints" / "final.pt"], "checkpoint",
                       "; pass --checkpoint PATH (the final.pt `train` wrote)")
    results_path = _first([Path(eval_results)] if eval_results else
                          [run / "eval_results.jsonl", run / "evals" / "eval_results.jsonl"], "eval results",
                          "; run `evaluate ... --output RUN/evals` or pass --eval-results PATH")
    record_path = results_path.parent / MODEL_RECORD

    try:
        arr = read_subset(subset_path)
    except SubsetFileError as e:
        raise BundleError(str(e)) from None
    stats_doc = _read_json(stats_path)
    results = _read_results(results_path)
    try:
        tasks = load_tasks(tasks_path)
    except TaskError as e:
        raise BundleError(str(e)) from None
    try:
        weights = load(ckpt_path)
    except CheckpointError as e:
        raise BundleError(str(e)) from None
    subset_sha, ckpt_sha = sha256_file(subset_path), sha256_file(ckpt_path)
    summary = summarize(results, tasks)
    model = (info.get("protocol") or {}).get("model")

    failures, checks = [], []

    def check(name: str, ok: bool, detail: str, fatal: bool = True) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok and fatal:
            failures.append(f"{name}: {detail}")

    rows = int(len(arr))
    if "kept" in stats_doc:
        check("subset rows = stats kept", stats_doc["kept"] == rows,
              f"{subset_path} has {rows:,} rows, {stats_path} says kept {stats_doc['kept']:,}")
    if stats_doc.get("subset_sha256"):
        check("subset sha256 = stats", stats_doc["subset_sha256"] == subset_sha,
              f"{stats_path} records sha256 {stats_doc['subset_sha256']}, {subset_path} has {subset_sha}")
    matches, tie, detail = _trained_on(info.get("data_source"), subset_path, subset_sha, arr, info_path)
    check("subset = training data", matches, detail)
    check("training finished", info.get("finished") is True,
          f"{info_path}: finished={info.get('finished')!r} (a run still going or killed is not a submission)")
    scale_numbers, departures = protocol_departures(info)
    check("scale protocol (configs/scales.yaml)", not departures, "; ".join(departures) or "as prescribed",
          fatal=not allow_non_standard)
    check("checkpoint = run's final weights", weights.get("samples_seen") == info.get("samples_seen")
          and weights.get("model") == model and "state_dict" in weights,
          f"{ckpt_path}: model {weights.get('model')!r} after {weights.get('samples_seen')!r} samples; "
          f"{info_path}: {model!r} after {info.get('samples_seen')!r}")
    record = _read_json(record_path) if record_path.is_file() else None
    if record is None:
        check("results from this checkpoint", False, f"no {record_path}: cannot tell which model made {results_path}")
    else:
        check("results from this checkpoint", record.get("checkpoint_sha256") == ckpt_sha and record.get("model") == model,
              f"{record_path}: {record.get('model')!r} sha256 {record.get('checkpoint_sha256')}; "
              f"the checkpoint: {model!r} sha256 {ckpt_sha}")
    check("eval results present", bool(results), f"{results_path} holds {len(results)} task rows")
    if failures:
        raise BundleError("inconsistent run:\n  " + "\n  ".join(failures))

    scale = str(info.get("scale"))
    prefix = f"{scale}_scale"
    files = {f"{prefix}/results.jsonl": None,  # written from the rows, in DataComp's schema
             f"{prefix}/checkpoint.pt": ckpt_path,
             f"{prefix}/samples/{subset_path.name}": subset_path,
             "provenance/info.json": info_path, "provenance/stats.json": stats_path,
             f"provenance/{MODEL_RECORD}": record_path}
    config = MODELS_DIR / f"{model}.json"
    if config.is_file():  # a project model open_clip does not know: its config travels with the weights
        files[f"provenance/{config.name}"] = config
    standard = not departures
    dc_rows = datacomp_rows(results, tasks)
    form = {
        "scale": scale, "model": model, "dataset_size": rows, "checkpoint": f"{prefix}/checkpoint.pt",
        "batch_size": scale_numbers.get("global_batch"), "learning_rate": scale_numbers.get("lr"),
        **{k: (form or {}).get(k) for k in ("method_name", "author", "email", "hf_username", "hf_repo_name")},
        "timestamp": time.strftime("%Y-%m-%d_%H:%M:%S", time.gmtime()), "track": TRACK,
        "writeup": (form or {}).get("writeup"),
        **{r["dataset"]: r["metrics"]["main_metric"] for r in dc_rows if r["metrics"]["main_metric"] is not None},
    }
    manifest = {
        "format_version": FORMAT_VERSION,
        "track": TRACK,
        "run": str(run.resolve()),
        "upload": {"folder": prefix, "how": f"huggingface-cli upload USER/REPO DIR/{prefix} {prefix}",
                   "leaderboard_scale": scale in DATACOMP_SCALES},
        "subset": {"file": f"{prefix}/samples/{subset_path.name}", "sha256": subset_sha, "rows": rows,
                   "unique_uids": _unique_rows(arr), "trained_on_by": tie},
        "checkpoint": {"file": f"{prefix}/checkpoint.pt", "sha256": ckpt_sha, "model": model},
        "filter": {"filters": stats_doc.get("filters"), "thresholds": stats_doc.get("thresholds"),
                   "pool": stats_doc.get("pool"), "rows_in": stats_doc.get("rows_in")},
        "training": {"scale": scale, "samples_seen": info.get("samples_seen"), "model": model,
                     "scale_numbers": scale_numbers, "departures": departures,
                     "non_standard": info.get("non_standard") or {}, "standard_protocol": standard},
        "evaluation": {"average": summary["average"], "n_tasks": summary["n_tasks"], "n_scored": summary["n_scored"],
                       "partial": summary["partial"], "missing": summary["missing"],
                       "main_metrics": summary["main_metrics"]},
        "form_missing": [k for k in ("method_name", "author", "email", "hf_username", "hf_repo_name") if not form[k]],
        "checks": checks,
        "complete": not summary["partial"] and standard,
    }
    return manifest, {"form": form, "results": dc_rows}, files


def write_bundle(manifest: dict, extra: dict, files: dict[str, Path | None], output: Path) -> Path:
    """Write the files, submission.json and bundle.json into a temporary folder beside `output`, then rename it.

    An existing `output` is replaced only if it is an earlier bundle (holds bundle.json) or empty. Each copied
    file's sha256 is taken from the copy and must equal its source's at collection (checkpoint, subset).
    """
    output = Path(output)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / "bundle.json").is_file())):
        raise BundleError(f"{output} exists and is not an earlier bundle; choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    expect = {manifest["subset"]["file"]: manifest["subset"]["sha256"],
              manifest["checkpoint"]["file"]: manifest["checkpoint"]["sha256"]}
    try:
        entries = {}
        for name, src in files.items():
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src is None:  # results.jsonl: DataComp's rows
                with atomic_open(dest, "w") as f:
                    f.write("".join(json.dumps(r) + "\n" for r in extra["results"]))
            else:
                shutil.copyfile(src, dest)
            digest = sha256_file(dest)
            if name in expect and digest != expect[name]:
                raise BundleError(f"{src} changed while being bundled")
            entries[name] = {"sha256": digest, "bytes": dest.stat().st_size,
                             "source": None if src is None else str(Path(src).resolve())}
        write_json(tmp / "submission.json", extra["form"])
        entries["submission.json"] = {"sha256": sha256_file(tmp / "submission.json"),
                                      "bytes": (tmp / "submission.json").stat().st_size, "source": None}
        write_json(tmp / "bundle.json", {**manifest, "files": entries})
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
        description="Write a DataComp filtering-track submission from a run, as DataComp's evaluate.py --submit "
                    "uploads it ({scale}_scale/results.jsonl, checkpoint.pt, samples/), with the form's fields "
                    "(submission.json), after checking that subset, training, checkpoint and results belong "
                    "together. Nothing is uploaded.")
    p.add_argument("run", type=Path, help="run folder: info.json and checkpoints/final.pt (train), "
                                          "eval_results.jsonl (evaluate --output RUN or RUN/evals)")
    p.add_argument("--output", required=True, type=Path, help="bundle folder to write")
    p.add_argument("--subset", type=Path, help="subset file (default RUN/subset.npy, then the subset file the "
                                               "run's shards were resharded from, as info.json records)")
    p.add_argument("--stats", type=Path, help="curate's stats.json (default: beside the subset file)")
    p.add_argument("--checkpoint", type=Path, help="weights (default RUN/checkpoints/final.pt)")
    p.add_argument("--eval-results", type=Path,
                   help="eval_results.jsonl (default RUN/eval_results.jsonl, then RUN/evals/eval_results.jsonl)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="task list YAML (default: DataComp's 38 tasks)")
    p.add_argument("--allow-non-standard", action="store_true",
                   help="bundle a run that departs from its scale in configs/scales.yaml (marked not standard)")
    form = p.add_argument_group("the submission form (DataComp's evaluate.py flags; written to submission.json)")
    form.add_argument("--method-name", help="shown on the leaderboard")
    form.add_argument("--author", help="shown on the leaderboard")
    form.add_argument("--email", help="for contact, not shown")
    form.add_argument("--hf-username", help="Hugging Face user owning the upload repo")
    form.add_argument("--hf-repo-name", help="Hugging Face repo the bundle's {scale}_scale/ folder goes to")
    form.add_argument("--writeup", help="link to a paper or blog post")
    args = p.parse_args(argv)
    fields = {k: getattr(args, k) for k in ("method_name", "author", "email", "hf_username", "hf_repo_name", "writeup")}
    try:
        manifest, extra, files = collect(args.run, args.subset, args.stats, args.eval_results, args.tasks,
                                         args.checkpoint, args.allow_non_standard, fields)
        write_bundle(manifest, extra, files, args.output)
    except BundleError as e:
        print(f"evaluate bundle: error: {e}", file=sys.stderr)
        return 2
    ev, tr = manifest["evaluation"], manifest["training"]
    avg = "n/a" if ev["average"] is None else f"{100 * ev['average']:.2f}"
    print(f"bundle written to {args.output}: {manifest['subset']['rows']:,} samples "
          f"(sha256 {manifest['subset']['sha256'][:12]}...), scale {tr['scale']}, "
          f"average {avg} over {ev['n_tasks']}/{ev['n_scored']} tasks; upload {args.output}/{manifest['upload']['folder']}")
    if ev["partial"]:
        print(f"PARTIAL: {len(ev['missing'])} tasks missing: {', '.join(ev['missing'])}")
    if not tr["standard_protocol"]:
        print(f"NON-STANDARD training: {'; '.join(tr['departures'])}")
    if not manifest["upload"]["leaderboard_scale"]:
        print(f"note: scale {tr['scale']} is not one of the leaderboard's ({', '.join(DATACOMP_SCALES)})")
    if manifest["form_missing"]:
        print(f"form fields to fill in before submitting: {', '.join('--' + k.replace('_', '-') for k in manifest['form_missing'])}")
    return 0
