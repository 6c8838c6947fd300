"""Group-robust metrics of DataComp's WILDS and fairness tasks, from predictions and per-sample metadata.

Each sample of these eval sets carries `{key}.npy`, an integer metadata vector whose fields are listed in
METADATA_FIELDS (the order DataComp's evaluators declare). Written without the `wilds` package (which needs
torch_scatter) but following its definitions: worst-group = minimum over groups that have samples;
F1-macro_all = sklearn's macro F1 over the classes present in the labels.
"""

from __future__ import annotations

import numpy as np
import torch

METADATA_FIELDS = {
    "wilds/iwildcam": ["location", "sequence", "year", "month", "day", "hour", "minute", "second", "y"],
    "wilds/camelyon17": ["hospital", "slide", "y"],
    "wilds/fmow": ["region", "year", "y"],
    "fairness/dollar_street": ["income_ds", "income_meta", "region"],
    "fairness/geode": ["region", "country"],
}


def macro_f1(target: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes present in `target` (sklearn f1_score(average='macro', labels=unique(target)))."""
    scores = []
    for c in np.unique(target):
        tp = np.sum((pred == c) & (target == c))
        fp = np.sum((pred == c) & (target != c))
        fn = np.sum((pred != c) & (target == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def macro_recall(target: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[target == c] == c) for c in np.unique(target)]))


def group_accuracies(correct: np.ndarray, groups: np.ndarray) -> dict[int, float]:
    """Accuracy of every group that has at least one sample."""
    return {int(g): float(correct[groups == g].mean()) for g in np.unique(groups)}


def group_metrics(key: str, logits: torch.Tensor, target: torch.Tensor, metadata: torch.Tensor) -> dict:
    """The task-specific metrics (including DataComp's main metric) of a WILDS / fairness task."""
    if key not in METADATA_FIELDS:
        return {}
    fields = METADATA_FIELDS[key]
    meta = metadata.reshape(len(target), -1).long().numpy()
    if meta.shape[1] != len(fields):
        raise ValueError(f"{key}: metadata has {meta.shape[1]} fields, expected {len(fields)} ({', '.join(fields)})")
    col = {f: meta[:, i] for i, f in enumerate(fields)}
    y = target.numpy()
    pred = logits.argmax(dim=1).numpy()
    correct = pred == y
    out = {}
    if key == "wilds/iwildcam":
        out = {"acc_avg": float(correct.mean()), "Recall-macro_all": macro_recall(y, pred),
               "F1-macro_all": macro_f1(y, pred)}
    elif key == "wilds/camelyon17":
        out = {"acc_avg": float(correct.mean()), "acc_wg": min(group_accuracies(correct, col["slide"]).values())}
    elif key == "wilds/fmow":
        by_region = group_accuracies(correct, col["region"])
        out = {"acc_avg": float(correct.mean()),
               "acc_worst_year": min(group_accuracies(correct, col["year"]).values()),
               "acc_worst_region": min(by_region.values())}
        out.update({f"acc_region:{g}": v for g, v in by_region.items()})
    elif key == "fairness/dollar_street":
        top5 = logits.topk(min(5, logits.shape[1]), dim=1)[1].numpy()
        hit5 = (top5 == y[:, None]).any(axis=1)
        by_income = group_accuracies(hit5, col["income_ds"])
        out = {"acc_top5_avg": float(hit5.mean()), "acc_top5_wg": min(by_income.values())}
        out.update({f"acc_top5_income_ds:{g}": v for g, v in by_income.items()})
    elif key == "fairness/geode":
        by_region = group_accuracies(correct, col["region"])
        out = {"acc_avg": float(correct.mean()), "acc_wg": min(by_region.values())}
        out.update({f"acc_region:{g}": v for g, v in by_region.items()})
    return out
