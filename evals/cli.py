"""The `evaluate` command: score a checkpoint on DataComp's suite, or compare runs.

    evaluate --checkpoint CKPT --model ARCH --eval-dir EVALS --output DIR     score one model
    evaluate leaderboard RUN... [--format md|csv|html]                        rank runs against DataComp's baselines
    evaluate download --eval-dir EVALS [--only KEY...] [--hub-root DIR]       fetch DataComp's eval sets from the hub
    evaluate bundle RUN --output DIR                                          gather a filtering-track submission
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

SUBCOMMANDS = ("leaderboard", "download", "bundle")


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate",
        description="Zero-shot evaluation of an open_clip checkpoint on DataComp's 38-task suite "
                    "(webdataset eval sets as DataComp's downloader lays them out). "
                    f"Other commands: {', '.join(SUBCOMMANDS)} (see `evaluate leaderboard --help` and so on).")
    p.add_argument("--checkpoint", required=True,
                   help="local open_clip checkpoint (a state dict, or a dict with 'state_dict', as `train` writes) "
                        "or an open_clip pretrained tag such as 'openai' or 'datacomp_xl_s13b_b90k'")
    p.add_argument("--model", required=True, help="open_clip architecture name, e.g. ViT-B-32")
    p.add_argument("--model-config", metavar="JSON",
                   help="register a custom open_clip model config (named by the file stem) before loading")
    p.add_argument("--eval-dir", required=True, help="root holding wds_<task>_test folders")
    p.add_argument("--tasks", default=None,
                   help="task list YAML (default: configs/evals/datacomp.yaml, DataComp's 38 tasks)")
    p.add_argument("--only", nargs="+", metavar="KEY", help="run only these task keys from the list")
    p.add_argument("--output", required=True, help="folder for eval_results.jsonl and summary.json")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes decoding images (default 2)")
    p.add_argument("--force", action="store_true",
                   help="run the chosen tasks again although OUTPUT/eval_results.jsonl has them (default: skip "
                        "them, as DataComp's evaluate.py does)")
    return p


#: beside eval_results.jsonl: which model made the results, so a rerun only reuses results of the same model
MODEL_RECORD = "eval_model.json"


def model_record(arch: str, checkpoint: str, model_config: str | None) -> dict:
    """The architecture and the weights (a file by its sha256, wherever it lies; a pretrained tag by name)."""
    rec = {"model": arch, "checkpoint": checkpoint}
    if Path(checkpoint).is_file():
        rec.update(checkpoint=str(Path(checkpoint).resolve()), checkpoint_sha256=sha256_file(Path(checkpoint)))
    if model_config:
        rec["model_config_sha256"] = sha256_file(Path(model_config))
    return rec


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _same_model(a: dict, b: dict) -> bool:
    def key(r):
        return r.get("model"), r.get("checkpoint_sha256") or r.get("checkpoint"), r.get("model_config_sha256")

    return key(a) == key(b)


def finished_rows(output: Path, record: dict, keys: set[str], force: bool) -> list[dict]:
    """Result rows of an earlier run into `output` to keep: all of them, less `keys` with --force.

    Results of another model are refused (or, with --force, dropped), so one file never mixes two models.
    Results without a record (an older evaluate, DataComp's evaluate.py) are reused, as DataComp does.
    """
    from evals.summary import read_results
    from evals.tasks import TaskError

    results = output / "eval_results.jsonl"
    if not results.is_file():
        return []
    try:
        rows = read_results(results)
        old = json.loads((output / MODEL_RECORD).read_text()) if (output / MODEL_RECORD).is_file() else None
    except ValueError as e:
        raise TaskError(f"{results}: cannot read earlier results ({e}); use another --output") from None
    if old is not None and not _same_model(old, record):
        if not force:
            raise TaskError(f"{output} holds results of another model ({old.get('model')} {old.get('checkpoint')}); "
                            f"use another --output, or --force to replace them")
        return []
    return [r for r in rows if not (force and r.get("key") in keys)]


def run_eval(argv) -> int:
    args = eval_parser().parse_args(argv)
    import torch

    from evals.data import EvalDataError
    from evals.model import CheckpointError, load_model, register_model_config
    from evals.suite import run_suite, write_results
    from evals.tasks import DEFAULT_TASKS, TaskError, load_tasks, select

    from curate.atomic import remove_stale_temporaries, write_json

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    output = Path(args.output)
    remove_stale_temporaries(output)  # left by a killed evaluation
    try:
        suite = load_tasks(args.tasks or DEFAULT_TASKS)
        tasks = select(suite, args.only)
        if args.model_config:
            register_model_config(args.model_config)
        record = model_record(args.model, args.checkpoint, args.model_config)
        done = finished_rows(output, record, {t.key for t in tasks}, args.force)
        kept = [t.key for t in tasks if t.key in {r.get("key") for r in done}]
        if kept:
            print(f"{len(kept)} task(s) already in {output / 'eval_results.jsonl'}, not run again (--force to redo): "
                  f"{', '.join(kept[:8])}{', ...' if len(kept) > 8 else ''}")
        model = preprocess = tokenizer = None
        if any(t.key not in kept and t.path(args.eval_dir).is_dir() for t in tasks):
            model, preprocess, tokenizer = load_model(args.model, args.checkpoint, device)
        write_results(output / "eval_results.jsonl", done)  # before the record: the file never shows another model's rows
        write_json(output / MODEL_RECORD, record)
        _, summary = run_suite(tasks, model, preprocess, tokenizer, args.eval_dir, output, device,
                               args.batch_size, args.workers, suite=suite, done=done)
    except (TaskError, CheckpointError, EvalDataError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    if summary["n_tasks"] == 0:
        print(f"evaluate: error: no task of the list has data under {args.eval_dir}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "leaderboard":
        from evals.leaderboard import main as leaderboard_main
        return leaderboard_main(argv[1:])
    if argv and argv[0] == "download":
        from evals.download import main as download_main
        return download_main(argv[1:])
    if argv and argv[0] == "bundle":
        from evals.bundle import main as bundle_main
        return bundle_main(argv[1:])
    return run_eval(argv)


if __name__ == "__main__":
    sys.exit(main())
