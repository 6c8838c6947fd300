"""Zero-shot classification, computed the way CLIP_benchmark / DataComp compute it.

Classifier weights: every template filled with every class name, encoded, L2-normalised, averaged per class,
re-normalised; logits = 100 * normalised image features @ W. Amp stays off, as in DataComp's classification.
The speed comes from how, not what: all prompts go through the text tower in large length-sorted batches
with padding cut (evals.model.encode_text), weights are built once per task, and images are decoded in
DataLoader workers while the main process runs the image tower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evals.data import EvalDataset, EvalSet, make_loader
from evals.metrics import classification_metrics
from evals.model import encode_texts


def classifier_weights(model, tokenizer, classnames: list[str], templates: list[str], device: str,
                       batch_size: int = 1024) -> torch.Tensor:
    """(embed_dim, n_classes) zero-shot weights: mean of normalised template embeddings, re-normalised."""
    texts = [t.format(c=c) for c in classnames for t in templates]
    feats = encode_texts(model, tokenizer, texts, batch_size, device)
    feats = feats.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(feats, dim=-1).t().contiguous()


def image_features(model, loader, device: str):
    """Yield (normalised image features, *other batch fields) batch by batch, amp off."""
    with torch.inference_mode():
        for images, *rest in loader:
            feats = model.encode_image(images.to(device, non_blocking=True))
            yield (F.normalize(feats.float(), dim=-1), *rest)


def predict(model, weights: torch.Tensor, loader, device: str):
    """(logits, targets, extra fields) over the whole set."""
    logits, targets, extras = [], [], []
    for feats, target, *rest in image_features(model, loader, device):
        logits.append((100.0 * feats @ weights).cpu())
        targets.append(target)
        extras.append(rest)
    extra = [torch.cat(col) if isinstance(col[0], torch.Tensor) else sum(col, []) for col in zip(*extras)] if extras else []
    return torch.cat(logits), torch.cat(targets), extra


def evaluate_classification(model, preprocess, tokenizer, es: EvalSet, device: str, batch_size: int = 64,
                            workers: int = 0, fields: tuple[str, ...] = ("cls",)):
    """Metrics dict plus (logits, targets, extra fields) for the task-specific metrics built on them."""
    weights = classifier_weights(model, tokenizer, es.classnames, es.templates, device)
    loader = make_loader(EvalDataset(es.shards, preprocess, fields), batch_size, workers)
    logits, target, extra = predict(model, weights, loader, device)
    return classification_metrics(logits, target, len(es.classnames)), (logits, target, extra)
