"""Metric functions against their references (sklearn, CLIP_benchmark) on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from evals.metrics import balanced_accuracy, classification_metrics, retrieval_recalls


@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_is_sklearns(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 6, 50)
    pred = np.where(rng.random(50) < 0.4, target, rng.integers(0, 9, 50))  # predicts classes absent from target too
    with pytest.warns(UserWarning) if np.setdiff1d(pred, target).size else _nothing():
        ref = balanced_accuracy_score(target, pred)
    assert balanced_accuracy(target, pred) == pytest.approx(ref, abs=1e-12)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_accuracy_counts():
    logits = torch.tensor([[3.0, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    target = torch.tensor([0, 0, 5])
    m = classification_metrics(logits, target, 6)
    assert m["acc1"] == pytest.approx(1 / 3)
    assert m["acc5"] == pytest.approx(1 / 3)  # row 2: class 0 ranks 6th; row 3: class 5 ranks 6th
    assert m["mean_per_class_recall"] == pytest.approx((1 / 2 + 0) / 2)


@pytest.mark.parametrize("seed", range(4))
def test_retrieval_recalls_match_clip_benchmark(seed):
    from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

    g = torch.Generator().manual_seed(seed)
    n_images = 30
    owner = torch.repeat_interleave(torch.arange(n_images), torch.randint(1, 6, (n_images,), generator=g))
    scores = torch.randn(len(owner), n_images, generator=g)
    scores[torch.arange(len(owner)), owner] += 1.0  # some signal, so recalls are not all near chance
    pos = torch.zeros_like(scores, dtype=torch.bool)
    pos[torch.arange(len(owner)), owner] = True
    ours = retrieval_recalls(scores, owner, ks=(1, 3, 5, 10))
    for k in (1, 3, 5, 10):
        img = (batchify(recall_at_k, scores, pos, 7, "cpu", k=k) > 0).float().mean().item()
        txt = (batchify(recall_at_k, scores.T, pos.T, 7, "cpu", k=k) > 0).float().mean().item()
        assert ours[f"image_retrieval_recall@{k}"] == pytest.approx(img, abs=1e-7)
        assert ours[f"text_retrieval_recall@{k}"] == pytest.approx(txt, abs=1e-7)
    assert 0 < ours["image_retrieval_recall@1"] < ours["image_retrieval_recall@10"] < 1
