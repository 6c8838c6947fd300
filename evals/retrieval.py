"""Zero-shot image-text retrieval (Flickr30k, MSCOCO): recall@k both ways, main metric mean recall@1.

Same numbers as CLIP_benchmark's zeroshot_retrieval; captions are encoded in large length-sorted batches
after all images, and recall comes from ranks rather than a texts x k x images one-hot.
"""

from __future__ import annotations

import torch

from evals.data import EvalDataset, EvalSet, make_loader
from evals.metrics import retrieval_recalls
from evals.model import encode_texts
from evals.zeroshot import image_features


def evaluate_retrieval(model, preprocess, tokenizer, es: EvalSet, device: str, batch_size: int = 64,
                       workers: int = 0, ks=(1, 5, 10)) -> dict:
    loader = make_loader(EvalDataset(es.shards, preprocess, ("txt",)), batch_size, workers)
    img_feats, texts, owner = [], [], []
    n = 0
    for feats, captions in image_features(model, loader, device):
        img_feats.append(feats.cpu())
        for i, caps in enumerate(captions):
            texts.extend(caps)
            owner.extend([n + i] * len(caps))
        n += len(captions)
    images = torch.cat(img_feats)
    text_feats = encode_texts(model, tokenizer, texts, max(batch_size, 256), device).cpu()
    scores = text_feats @ images.t()
    metrics = retrieval_recalls(scores, torch.tensor(owner), ks)
    metrics["mean_recall@1"] = 0.5 * (metrics["text_retrieval_recall@1"] + metrics["image_retrieval_recall@1"])
    return metrics
