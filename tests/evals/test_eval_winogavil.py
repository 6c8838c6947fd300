"""WinoGAViL: the metric against sklearn and DataComp's loop, end to end from a hub-like parquet."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import jaccard_score

import evalsynth
from evals.download import download
from evals.suite import evaluate_task
from evals.tasks import load_tasks
from evals.winogavil import clip_prompt, predict, winogavil_metrics


def test_prompt_is_datacomps():
    assert clip_prompt("Apple") == "An apple" and clip_prompt("ice") == "An ice"
    assert clip_prompt("Dog") == "A dog" and clip_prompt("yellow") == "A yellow"  # y is not a vowel there


@pytest.mark.parametrize("seed", range(3))
def test_metrics_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores, truth, sizes = [], [], rng.choice([5, 6, 10, 12], 40)
    for n in sizes:
        t = np.zeros(n, dtype=bool)
        t[rng.choice(n, int(rng.integers(1, 5)), replace=False)] = True
        scores.append(rng.normal(size=n).astype(np.float32))
        truth.append(t)
    m = winogavil_metrics(scores, truth)
    ref = []
    for s, t in zip(scores, truth):
        pred = np.zeros(len(t), dtype=bool)
        pred[np.argsort(-s)[:t.sum()]] = True  # the k highest scores, found another way
        ref.append(jaccard_score(t, pred))
    ref = np.array(ref)
    assert m["avg_jaccard_score"] == pytest.approx(ref.mean())
    assert m["jaccard_score_10-12"] == pytest.approx(ref[sizes >= 10].mean())
    assert m["jaccard_score_5-6"] == pytest.approx(ref[sizes <= 6].mean())
    for n in (5, 6, 10, 12):
        assert m[f"jaccard_score_{n}"] == pytest.approx(ref[sizes == n].mean())


def test_metric_by_hand():
    # 3 true of 5; the 3 best scores hit 2 of them -> |2| / |4| = 0.5; a 10-candidate instance fully right -> 1
    s1, t1 = np.array([0.9, 0.8, 0.1, 0.7, 0.2]), np.array([1, 1, 1, 0, 0], dtype=bool)
    s2, t2 = np.arange(10.0), np.arange(10) >= 8
    assert predict(s1, 3).tolist() == [True, True, False, True, False]
    m = winogavil_metrics([s1, s2], [t1, t2])
    assert m["jaccard_score_5"] == 0.5 and m["jaccard_score_10-12"] == 1.0 and m["avg_jaccard_score"] == 0.75
    assert np.isnan(m["jaccard_score_12"]) and np.isnan(m["jaccard_score_6"])  # empty groups, as np.mean gives


def _datacomp_reference(rows, model, preprocess, tokenizer):
    """DataComp's eval_utils/wino_eval.py loop (one instance at a time, sklearn's jaccard_score) on CPU."""
    scores, groups = [], []
    for r in rows:
        images = torch.stack([preprocess(Image.open(io.BytesIO(c["bytes"]))) for c in r["candidate_images"]])
        text = tokenizer([clip_prompt(r["cue"])])
        y_true = np.isin(r["candidates"], r["associations"])
        with torch.no_grad():
            img = model.encode_image(images, normalize=True)
            txt = model.encode_text(text, normalize=True)
            logits = (txt @ img.T).squeeze(0).numpy()
        top = np.argsort(logits)[-y_true.sum():]
        scores.append(jaccard_score(y_true, np.isin(np.arange(len(images)), top)))
        groups.append(len(images))
    scores, groups = np.array(scores), np.array(groups)
    return {"avg_jaccard_score": scores.mean(), "jaccard_score_5": scores[groups == 5].mean(),
            "jaccard_score_6": scores[groups == 6].mean(), "jaccard_score_10": scores[groups == 10].mean(),
            "jaccard_score_12": scores[groups == 12].mean(), "jaccard_score_5-6": scores[groups <= 6].mean(),
            "jaccard_score_10-12": scores[groups >= 10].mean()}


def test_end_to_end_matches_datacomp(tmp_path, tiny_model):
    rows = evalsynth.winogavil_rows(sizes=(5, 6, 10, 12, 12, 10, 6))
    evalsynth.write_parquet(tmp_path / "hub/nlphuji/winogavil/default/test/0000.parquet", rows)
    task = next(t for t in load_tasks() if t.key == "misc/winogavil")
    assert download([task], tmp_path / "evals", tmp_path / "hub", log=lambda *_: None) == {
        "misc/winogavil": "downloaded"}
    model, preprocess, tokenizer = tiny_model
    ref = _datacomp_reference(rows, model, preprocess, tokenizer)
    # 2 workers share the instances; 3 instances per loader batch, their images encoded in chunks of 24
    m = evaluate_task(task, model, preprocess, tokenizer, tmp_path / "evals", "cpu", 24, 2)
    assert set(ref) <= set(m)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, abs=1e-9), k
    assert 0 < m["jaccard_score_10-12"] < 1  # neither trivially right nor wrong on this data
