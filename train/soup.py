"""Model soups: average the weights of several checkpoints of one architecture (Wortsman et al. 2022).

Uniform: the plain mean. Greedy: checkpoints sorted by their own held-out score, each added to the soup only
if the soup's score does not drop -- how OpenCLIP made its ViT-bigG and ConvNeXt-XXLarge soups. The result
is a `{"state_dict": ...}` file that loads like any checkpoint (open_clip `pretrained=PATH` included).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint


class SoupError(ValueError):
    """Checkpoints that cannot be averaged (different architectures)."""


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    state = checkpoint.load(path)
    sd = state["state_dict"] if isinstance(state, dict) and "state_dict" in state else state
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def average(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point weights (integer buffers must agree and are kept)."""
    if not state_dicts:
        raise SoupError("no checkpoints to average")
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], 1):
        if sd.keys() != first.keys():
            diff = sorted(set(sd) ^ set(first))
            raise SoupError(f"checkpoint {i} has different weights than checkpoint 0 (e.g. {diff[:3]})")
        for k, v in sd.items():
            if v.shape != first[k].shape:
                raise SoupError(f"checkpoint {i}: {k} has shape {tuple(v.shape)}, not {tuple(first[k].shape)}")
    out = {}
    for k, v in first.items():
        if v.is_floating_point():
            out[k] = (sum(sd[k].double() for sd in state_dicts) / len(state_dicts)).to(v.dtype)
        else:
            if any(not torch.equal(sd[k], v) for sd in state_dicts[1:]):
                raise SoupError(f"non-float buffer {k} differs between checkpoints")
            out[k] = v.clone()
    return out


def greedy(paths: list[str | Path], score: Callable[[dict], float], log=print) -> tuple[dict, list[str]]:
    """Greedy soup: (weights, chosen paths). `score` maps weights to a held-out score (higher is better)."""
    weights = {str(p): load_weights(p) for p in paths}
    own = {p: score(sd) for p, sd in weights.items()}
    order = sorted(own, key=own.get, reverse=True)
    chosen = [order[0]]
    best = own[order[0]]
    log(f"greedy soup: start with {order[0]} ({best:.4f})")
    for p in order[1:]:
        candidate = average([weights[q] for q in chosen + [p]])
        s = score(candidate)
        if s >= best:
            chosen.append(p)
            best = s
            log(f"  + {p}: {s:.4f}")
        else:
            log(f"  - {p}: {s:.4f} < {best:.4f}")
    return average([weights[q] for q in chosen]), chosen


def held_out_scorer(model_name: str, eval_dir: str | Path, device: str = "cpu", batch_size: int = 64):
    """Zero-shot top-1 accuracy on one classification eval set folder (the evaluator's reader and metric)."""
    import open_clip

    from evals.data import open_eval_set  # the evaluator owns eval-set formats and metrics
    from evals.zeroshot import evaluate_classification

    from .scales import register_model_configs

    register_model_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    es = open_eval_set(eval_dir)
    model = model.to(device).eval()

    def score(sd: dict) -> float:
        model.load_state_dict(sd)
        metrics, _ = evaluate_classification(model, preprocess, tokenizer, es, device, batch_size)
        return float(metrics["acc1"])

    return score


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="train soup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints of one architecture")
    p.add_argument("--output", required=True, type=Path, help="where to write the soup")
    p.add_argument("--greedy", action="store_true", help="greedy soup scored on --eval-dir (default: uniform)")
    p.add_argument("--eval-dir", type=Path, help="one zero-shot classification eval set folder (held out)")
    p.add_argument("--model", help="open_clip model name (default: the 'model' recorded in the checkpoints)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        p.error(f"no such checkpoint: {', '.join(missing)}")
    model_name = args.model or checkpoint.load(args.checkpoints[0]).get("model")
    if args.greedy:
        if args.eval_dir is None or model_name is None:
            p.error("--greedy needs --eval-dir (and --model when the checkpoints do not record it)")
        weights, chosen = greedy(args.checkpoints, held_out_scorer(model_name, args.eval_dir, args.device))
    else:
        try:
            weights = average([load_weights(c) for c in args.checkpoints])
        except SoupError as e:
            p.error(str(e))
        chosen = [str(c) for c in args.checkpoints]
    checkpoint.save({"state_dict": weights, "model": model_name, "soup": chosen,
                     "kind": "greedy" if args.greedy else "uniform"}, args.output)
    print(f"soup of {len(chosen)} checkpoints -> {args.output}")
    return 0
