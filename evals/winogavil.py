"""WinoGAViL, as DataComp's `eval_utils/wino_eval.py` scores it; main metric `jaccard_score_10-12`.

Each instance is a cue word and 5, 6, 10 or 12 candidate images, some of which the cue is associated with.
DataComp's rule, reproduced here:

- the text is `get_clip_prompt(cue)`: the cue lower-cased, prefixed with "An " if it starts with a vowel
  (a, e, i, o, u) and "A " otherwise;
- scores are cosine similarities of the normalised text feature with each normalised candidate image feature;
- with k = number of true associations, the prediction is the candidates at `np.argsort(scores)[-k:]`;
- the instance score is sklearn's binary `jaccard_score(y_true, y_pred)` = |true ∩ pred| / |true ∪ pred|;
- reported: `avg_jaccard_score` (all instances), `jaccard_score_{5,6,10,12}` (instances with that many
  candidates), `jaccard_score_5-6` (at most 6 candidates) and `jaccard_score_10-12` (at least 10).

DataComp runs one instance at a time under `torch.cuda.amp.autocast()` (a no-op on CPU); here images of many
instances share a forward pass, amp off, and every cue is encoded in one length-sorted batch.
The data is the webdataset that `evaluate download` writes from nlphuji/winogavil: `{key}.json` with `cue`,
`candidates`, `associations`, and the candidate images `{key}.{j:02d}.{ext}` in candidate order.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from evals.data import EvalDataError, EvalSet, _one_thread, iter_tar_samples, rgb_image
from evals.model import encode_texts
from evals.zeroshot import image_features

GROUPS = {"jaccard_score_5": (5, 5), "jaccard_score_6": (6, 6), "jaccard_score_10": (10, 10),
          "jaccard_score_12": (12, 12), "jaccard_score_5-6": (0, 6), "jaccard_score_10-12": (10, 10**9)}


def clip_prompt(cue: str) -> str:
    """DataComp's `get_clip_prompt`."""
    item = cue.lower()
    return f"An {item}" if item[0] in "aeiou" else f"A {item}"


def predict(scores: np.ndarray, n_assoc: int) -> np.ndarray:
    """Boolean prediction: the `n_assoc` best-scoring candidates (DataComp's `np.argsort(...)[-n_assoc:]`)."""
    top = np.argsort(scores)[-n_assoc:]
    return np.isin(np.arange(len(scores)), top)


def jaccard(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Binary Jaccard index of the positive class; 0 when both are empty (sklearn's zero_division default)."""
    union = np.sum(y_true | y_pred)
    return float(np.sum(y_true & y_pred) / union) if union else 0.0


def winogavil_metrics(scores: list[np.ndarray], y_true: list[np.ndarray]) -> dict:
    """DataComp's metric dict from per-instance similarity scores and true-association masks."""
    per, sizes = [], []
    for s, t in zip(scores, y_true):
        t = np.asarray(t, dtype=bool)
        per.append(jaccard(t, predict(np.asarray(s), int(t.sum()))))
        sizes.append(len(t))
    per, sizes = np.array(per, dtype=np.float64), np.array(sizes)

    def mean(mask):
        return float(per[mask].mean()) if mask.any() else float("nan")

    out = {"avg_jaccard_score": mean(np.ones(len(per), dtype=bool))}
    for name, (lo, hi) in GROUPS.items():
        out[name] = mean((sizes >= lo) & (sizes <= hi))
    return out


class WinoDataset(torch.utils.data.IterableDataset):
    """(stacked candidate images, cue, true-association mask) per instance; instances dealt to workers."""

    def __init__(self, shards, transform):
        self.shards, self.transform = list(shards), transform

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for si, shard in enumerate(self.shards):
            for s in iter_tar_samples(shard, keep=lambda i, si=si: (si + i) % nw == wid):
                yield self._decode(s, shard)

    def _decode(self, s: dict, shard):
        if "json" not in s:
            raise EvalDataError(f"{shard}: sample {s['__key__']} has no .json (cue, candidates, associations)")
        meta = json.loads(s["json"])
        cands = list(meta.get("candidates") or [])
        imgs = [s.get(k) for k in sorted(k for k in s if k[:2].isdigit() and "." in k)]
        if not cands or len(imgs) != len(cands):
            raise EvalDataError(f"{shard}: sample {s['__key__']} has {len(cands)} candidates but {len(imgs)} images")
        images = torch.stack([self.transform(rgb_image(b, f"{shard}: sample {s['__key__']}")) for b in imgs])
        y_true = np.isin(np.array(cands, dtype=object), np.array(meta.get("associations") or [], dtype=object))
        return images, str(meta["cue"]), y_true


def _collate(batch):
    return list(zip(*batch))


def evaluate_winogavil(model, preprocess, tokenizer, es: EvalSet, device: str, batch_size: int = 64,
                       workers: int = 0) -> dict:
    # about batch_size images per loader batch (instances hold 5 to 12 candidates)
    loader = torch.utils.data.DataLoader(WinoDataset(es.shards, preprocess), batch_size=max(1, batch_size // 8),
                                         num_workers=workers, collate_fn=_collate,
                                         worker_init_fn=_one_thread if workers else None)
    feats, cues, y_true = [], [], []
    for images, cue, truth in loader:
        counts = [len(x) for x in images]
        flat = torch.cat(images)
        chunks = [(flat[s:s + batch_size],) for s in range(0, len(flat), batch_size)]
        f = torch.cat([x[0].cpu() for x in image_features(model, chunks, device)])
        feats.extend(f.split(counts))
        cues.extend(cue)
        y_true.extend(truth)
    if not cues:
        raise EvalDataError(f"{es.root}: no WinoGAViL instances")
    text = encode_texts(model, tokenizer, [clip_prompt(c) for c in cues], max(batch_size, 256), device).cpu()
    scores = [(f @ t).numpy() for f, t in zip(feats, text)]
    return winogavil_metrics(scores, y_true)
