"""Metric definitions, written to give CLIP_benchmark's / DataComp's numbers (tests compare them).

Pure functions of logits / scores and labels, so they can be checked without a model.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks=(1,)) -> list[float]:
    """Fraction of samples whose label is among the k highest logits (CLIP_benchmark's `accuracy`)."""
    pred = logits.topk(max(ks), dim=1, largest=True, sorted=True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum()) / len(target) for k in ks]


def balanced_accuracy(target: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the classes present in `target` of per-class recall (sklearn's balanced_accuracy_score)."""
    target, pred = np.asarray(target), np.asarray(pred)
    classes = np.unique(target)
    recalls = [np.mean(pred[target == c] == c) for c in classes]
    return float(np.mean(recalls))


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> dict:
    """acc1, acc5 (NaN below 5 classes, as DataComp reports it) and mean per-class recall."""
    logits, target = logits.float().cpu(), target.cpu()
    if n_classes >= 5:
        acc1, acc5 = topk_accuracy(logits, target, (1, 5))
    else:
        (acc1,), acc5 = topk_accuracy(logits, target, (1,)), float("nan")
    pred = logits.argmax(dim=1)
    return {"acc1": acc1, "acc5": acc5,
            "mean_per_class_recall": balanced_accuracy(target.numpy(), pred.numpy())}


def retrieval_recalls(scores: torch.Tensor, text_to_image: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """CLIP-style recall@k for a (n_texts, n_images) score matrix where text t belongs to image text_to_image[t].

    image_retrieval_recall@k: fraction of texts whose image ranks in the top k images.
    text_retrieval_recall@k: fraction of images with at least one of their texts in the top k texts.
    Computed from ranks (how many candidates score strictly above the best positive), which needs
    O(texts x images) memory once instead of CLIP_benchmark's one-hot of size texts x k x images.
    """
    n_texts, n_images = scores.shape
    t2i = text_to_image.long()
    pos_score = scores[torch.arange(n_texts), t2i]
    # ties are broken by index like torch.topk does for CLIP_benchmark: ties are vanishingly rare with
    # float features, so count strictly greater scores
    img_rank = (scores > pos_score[:, None]).sum(dim=1)
    # for each image, the best-scoring of its texts decides text retrieval
    best = torch.full((n_images,), -math.inf, dtype=scores.dtype)
    best = best.scatter_reduce(0, t2i, pos_score, reduce="amax")
    txt_rank = (scores > best[None, :]).sum(dim=0)
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = float((img_rank < k).float().mean())
        out[f"text_retrieval_recall@{k}"] = float((txt_rank < k).float().mean())
    return out
