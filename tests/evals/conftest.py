"""Shared fixtures: synthetic eval sets, a random tiny CLIP on disk, and CLIP_benchmark's numbers for them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import evalsynth  # noqa: E402


@pytest.fixture(scope="session")
def eval_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evals")
    evalsynth.make_classification_set(root / "wds_cifar10_test", n_classes=7, n_images=60, n_templates=4, n_shards=2)
    evalsynth.make_classification_set(root / "wds_vtab-pcam_test", n_classes=3, n_images=20, n_templates=2,
                                      n_shards=1, seed=5)
    evalsynth.make_retrieval_set(root / "wds_retrieval-flickr30k_test", n_images=24)
    return root


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return evalsynth.make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    from evals.model import load_model, register_model_config

    register_model_config(evalsynth.TINY_CONFIG)
    return load_model(evalsynth.TINY_ARCH, str(tiny_ckpt), "cpu")


def _patched_accuracy(output, target, topk=(1,)):
    """CLIP_benchmark 1.6.2's `accuracy`, with `.numpy()[0]` instead of float() of a 1-element array.

    NumPy >= 2.4 refuses float() on a 1-d array, which breaks the original; the formula is unchanged.
    """
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum(0, keepdim=True).cpu().numpy()[0]) / len(target) for k in topk]


@pytest.fixture(scope="session")
def reference(eval_root, tiny_model):
    """CLIP_benchmark's own reader and metrics on the same model and data (amp off, as DataComp classifies)."""
    import torch
    import clip_benchmark.metrics.zeroshot_classification as zsc
    import clip_benchmark.metrics.zeroshot_retrieval as zsr
    from clip_benchmark.datasets.builder import build_dataset, image_captions_collate_fn

    zsc.accuracy = _patched_accuracy
    model, preprocess, tokenizer = tiny_model
    out = {}
    for key, folder in [("cifar10", "wds_cifar10_test"), ("vtab/pcam", "wds_vtab-pcam_test")]:
        ds = build_dataset(f"wds/{key}", root=str(eval_root / folder), transform=preprocess, split="test",
                           download=False)
        dl = torch.utils.data.DataLoader(ds, batch_size=16)
        out[key] = zsc.evaluate(model, dl, tokenizer, ds.classes, ds.templates, "cpu", amp=False)
        weights = zsc.zero_shot_classifier(model, tokenizer, ds.classes, ds.templates, "cpu", amp=False)
        out[key + ":weights"] = weights
        out[key + ":logits"] = zsc.run_classification(model, weights, dl, "cpu", amp=False)
    ds = build_dataset("wds/flickr30k", root=str(eval_root / "wds_retrieval-flickr30k_test"), transform=preprocess,
                       split="test", download=False, task="zeroshot_retrieval")
    dl = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=image_captions_collate_fn)
    m = zsr.evaluate(model, dl, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    m["mean_recall@1"] = 0.5 * (m["text_retrieval_recall@1"] + m["image_retrieval_recall@1"])  # DataComp's main metric
    out["retrieval/flickr30k"] = m
    return out
