"""The `evaluate` command: score a checkpoint on DataComp's suite, or compare runs.

    evaluate --checkpoint CKPT --model ARCH --eval-dir EVALS --output DIR     score one model
    evaluate leaderboard RUN... [--format md|csv|html]                        rank runs against DataComp's baselines
    evaluate download --eval-dir EVALS [--only KEY...] [--hub-root DIR]       fetch DataComp's eval sets from the hub
    evaluate bundle RUN --output DIR                                          gather a filtering-track submission
"""

from __future__ import annotations

import argparse
import sys

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
    return p


def run_eval(argv) -> int:
    args = eval_parser().parse_args(argv)
    import torch

    from evals.data import EvalDataError
    from evals.model import CheckpointError, load_model, register_model_config
    from evals.suite import run_suite
    from evals.tasks import DEFAULT_TASKS, TaskError, load_tasks, select

    from curate.atomic import remove_stale_temporaries

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    remove_stale_temporaries(args.output)  # left by a killed evaluation
    try:
        suite = load_tasks(args.tasks or DEFAULT_TASKS)
        tasks = select(suite, args.only)
        if args.model_config:
            register_model_config(args.model_config)
        model, preprocess, tokenizer = load_model(args.model, args.checkpoint, device)
        _, summary = run_suite(tasks, model, preprocess, tokenizer, args.eval_dir, args.output, device,
                               args.batch_size, args.workers, suite=suite)
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
