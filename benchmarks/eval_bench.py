"""Images/s of `evaluate` next to CLIP_benchmark on the same model and generated data, in one run.

Both sides read the same webdataset eval sets with the same batch size and DataLoader workers, amp off,
and must produce identical metrics (checked; the script exits 1 otherwise). Throughput counts the whole
task: classifier weights (or caption encoding) plus every image.

    .venv/bin/python benchmarks/eval_bench.py                    # tiny random CLIP, CPU
    .venv/bin/python benchmarks/eval_bench.py --arch ViT-B-32 --device cuda --images 5000
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "evals"))
import evalsynth  # noqa: E402


def _accuracy(output, target, topk=(1,)):
    # CLIP_benchmark 1.6.2's accuracy with a NumPy >= 2.4 fix (float() of a 1-element array); same formula
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum(0, keepdim=True).cpu().numpy()[0]) / len(target) for k in topk]


def reference_classification(model, pre, tok, root, device, bs, workers):
    import clip_benchmark.metrics.zeroshot_classification as zsc
    from clip_benchmark.datasets.builder import build_dataset

    zsc.accuracy = _accuracy
    ds = build_dataset("wds/bench", root=str(root), transform=pre, split="test", download=False)
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=workers)
    return zsc.evaluate(model, dl, tok, ds.classes, ds.templates, device, amp=False)


def reference_retrieval(model, pre, tok, root, device, bs, workers):
    import clip_benchmark.metrics.zeroshot_retrieval as zsr
    from clip_benchmark.datasets.builder import build_dataset, image_captions_collate_fn

    ds = build_dataset("wds/flickr30k", root=str(root), transform=pre, split="test", download=False,
                       task="zeroshot_retrieval")
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=workers, collate_fn=image_captions_collate_fn)
    m = zsr.evaluate(model, dl, tok, device, amp=False, recall_k_list=[1, 5, 10])
    m["mean_recall@1"] = 0.5 * (m["text_retrieval_recall@1"] + m["image_retrieval_recall@1"])
    return m


def ours_classification(model, pre, tok, root, device, bs, workers):
    from evals.data import open_eval_set
    from evals.zeroshot import evaluate_classification

    return evaluate_classification(model, pre, tok, open_eval_set(root), device, bs, workers)[0]


def ours_retrieval(model, pre, tok, root, device, bs, workers):
    from evals.data import open_eval_set
    from evals.retrieval import evaluate_retrieval

    return evaluate_retrieval(model, pre, tok, open_eval_set(root, kind="retrieval"), device, bs, workers)


def _same(a: dict, b: dict) -> bool:
    return all((math.isnan(v) and math.isnan(a[k])) or abs(a[k] - v) <= 1e-6 for k, v in b.items())


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=evalsynth.TINY_ARCH, help="open_clip architecture (random init; default tiny)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=1000, help="images in the classification set")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--templates", type=int, default=6, help="templates per class (at most 6 distinct)")
    p.add_argument("--retrieval-images", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="alternate the two sides this many times; best time wins")
    args = p.parse_args(argv)

    import open_clip

    from evals.model import load_model

    open_clip.add_model_config(evalsynth.TINY_CONFIG)
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    cls_root = evalsynth.make_classification_set(tmp / "cls", n_classes=args.classes, n_images=args.images,
                                                 n_templates=args.templates, n_shards=4, size=(96, 80),
                                                 names=[f"thing number {i}" for i in range(args.classes)])
    ret_root = evalsynth.make_retrieval_set(tmp / "ret", n_images=args.retrieval_images, n_shards=2, size=(96, 80))
    torch.manual_seed(0)
    ckpt = tmp / "model.pt"
    torch.save(open_clip.create_model(args.arch).state_dict(), ckpt)
    model, pre, tok = load_model(args.arch, str(ckpt), args.device)
    print(f"model {args.arch} on {args.device}, torch threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, workers {args.workers}")

    ok = True
    lines = ["| task | images | CLIP_benchmark img/s | evaluate img/s | speed-up | metrics identical |",
             "|---|---|---|---|---|---|"]
    for name, n, ref_fn, our_fn, root in [
            (f"classification ({args.classes} classes x {args.templates} templates)", args.images,
             reference_classification, ours_classification, cls_root),
            ("retrieval (2-5 captions/image)", args.retrieval_images, reference_retrieval, ours_retrieval, ret_root)]:
        best_ref = best_ours = float("inf")
        for _ in range(args.repeats):
            ref, t_ref = timed(ref_fn, model, pre, tok, root, args.device, args.batch_size, args.workers)
            ours, t_ours = timed(our_fn, model, pre, tok, root, args.device, args.batch_size, args.workers)
            best_ref, best_ours = min(best_ref, t_ref), min(best_ours, t_ours)
        same = _same(ours, ref)
        ok &= same
        lines.append(f"| {name} | {n} | {n / best_ref:.1f} | {n / best_ours:.1f} | {best_ref / best_ours:.2f}x | "
                     f"{'yes' if same else 'NO'} |")
        if not same:
            print("reference:", ref, "\nours:", ours, file=sys.stderr)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
