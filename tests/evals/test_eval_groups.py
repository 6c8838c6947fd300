"""WILDS / fairness group metrics: definitions against sklearn and hand counts, and end to end."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

import evalsynth
from evals.data import iter_tar_samples
from evals.groups import group_metrics, macro_f1
from evals.suite import evaluate_task
from evals.tasks import load_tasks


@pytest.mark.parametrize("seed", range(4))
def test_macro_f1_is_sklearns(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, 80)
    pred = np.where(rng.random(80) < 0.5, y, rng.integers(0, 11, 80))
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro", labels=np.unique(y)), abs=1e-12)


def _onehot_logits(pred, n):
    return torch.nn.functional.one_hot(torch.tensor(pred), n).float()


def test_worst_region_and_year_by_hand():
    # regions 0,0,1,1,3 (region 2 empty: ignored); predictions right, wrong, right, right, wrong
    target = torch.tensor([0, 1, 2, 3, 4])
    logits = _onehot_logits([0, 0, 2, 3, 0], 5)
    meta = torch.tensor([[0, 0, 0], [0, 1, 1], [1, 0, 2], [1, 1, 3], [3, 1, 4]])
    m = group_metrics("wilds/fmow", logits, target, meta)
    assert m["acc_avg"] == pytest.approx(3 / 5)
    assert m["acc_worst_region"] == 0.0  # region 3: 0/1
    assert m["acc_region:0"] == 0.5 and m["acc_region:1"] == 1.0 and "acc_region:2" not in m
    assert m["acc_worst_year"] == pytest.approx(1 / 3)  # year 1: samples 1, 3, 4 -> 1 right


def test_dollar_street_top5_worst_income():
    torch.manual_seed(0)
    logits = torch.randn(40, 12)
    target = torch.randint(0, 12, (40,))
    meta = torch.stack([torch.arange(40) % 4, torch.zeros(40, dtype=torch.long), torch.arange(40) % 3], dim=1)
    m = group_metrics("fairness/dollar_street", logits, target, meta)
    hit = (logits.topk(5, dim=1)[1] == target[:, None]).any(dim=1).float()
    per_income = [hit[meta[:, 0] == g].mean().item() for g in range(4)]
    assert m["acc_top5_wg"] == pytest.approx(min(per_income))
    assert m["acc_top5_avg"] == pytest.approx(hit.mean().item())


def test_metadata_width_is_checked():
    with pytest.raises(ValueError, match="geode.*2"):
        group_metrics("fairness/geode", torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.zeros(3, 5))


def test_fmow_end_to_end(tmp_path, tiny_model):
    import clip_benchmark.metrics.zeroshot_classification as zsc
    from clip_benchmark.datasets.builder import build_dataset

    root = evalsynth.make_classification_set(tmp_path / "wds_wilds-fmow_test", n_classes=6, n_images=30,
                                             n_shards=1, seed=3, metadata_ranges=[4, 3, 6])
    model, preprocess, tokenizer = tiny_model
    task = next(t for t in load_tasks() if t.key == "wilds/fmow")
    m = evaluate_task(task, model, preprocess, tokenizer, tmp_path, "cpu", 8, 0)
    # reference: CLIP_benchmark's logits (same sample order), grouped by the region field of each .npy
    ds = build_dataset("wds/fmow", root=str(root), transform=preprocess, split="test", download=False)
    dl = torch.utils.data.DataLoader(ds, batch_size=8)
    w = zsc.zero_shot_classifier(model, tokenizer, ds.classes, ds.templates, "cpu", amp=False)
    logits, target = zsc.run_classification(model, w, dl, "cpu", amp=False)
    regions = np.array([np.load(io.BytesIO(s["npy"]))[0] for s in iter_tar_samples(root / "test/0.tar")])
    correct = (logits.argmax(1) == target).numpy()
    ref = min(correct[regions == g].mean() for g in np.unique(regions))
    assert m["acc_worst_region"] == pytest.approx(ref) and task.main_metric in m
    assert m["acc1"] == pytest.approx(correct.mean())
