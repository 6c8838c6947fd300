"""Every metric equals what CLIP_benchmark computes on the same tiny model and generated data."""

from __future__ import annotations

import math

import pytest
import torch

from evals.data import open_eval_set
from evals.retrieval import evaluate_retrieval
from evals.zeroshot import classifier_weights, evaluate_classification


def _same(ours: dict, ref: dict):
    assert set(ref) <= set(ours)
    for k, v in ref.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(ours[k]), k
        else:
            assert ours[k] == pytest.approx(v, abs=1e-6), k


@pytest.mark.parametrize("workers", [0, 2])
def test_classification_matches_clip_benchmark(eval_root, tiny_model, reference, workers):
    model, preprocess, tokenizer = tiny_model
    es = open_eval_set(eval_root / "wds_cifar10_test")
    metrics, (logits, target, _) = evaluate_classification(model, preprocess, tokenizer, es, "cpu", 16, workers)
    _same(metrics, reference["cifar10"])
    assert not math.isnan(metrics["acc5"]) and metrics["acc5"] > metrics["acc1"]
    if workers == 0:  # same sample order as the reference loader: compare the logits themselves
        ref_logits, ref_target = reference["cifar10:logits"]
        assert torch.equal(target, ref_target)
        torch.testing.assert_close(logits, ref_logits, atol=1e-3, rtol=0)


def test_classifier_weights_match(eval_root, tiny_model, reference):
    model, _, tokenizer = tiny_model
    es = open_eval_set(eval_root / "wds_cifar10_test")
    w = classifier_weights(model, tokenizer, es.classnames, es.templates, "cpu", batch_size=5)
    assert w.shape == reference["cifar10:weights"].shape == (32, 7)
    torch.testing.assert_close(w, reference["cifar10:weights"], atol=1e-5, rtol=0)
    torch.testing.assert_close(w.norm(dim=0), torch.ones(7))


def test_fewer_than_five_classes_has_no_acc5(eval_root, tiny_model, reference):
    model, preprocess, tokenizer = tiny_model
    es = open_eval_set(eval_root / "wds_vtab-pcam_test")
    metrics, _ = evaluate_classification(model, preprocess, tokenizer, es, "cpu", 8, 0)
    assert math.isnan(metrics["acc5"]) and math.isnan(reference["vtab/pcam"]["acc5"])
    _same(metrics, reference["vtab/pcam"])


@pytest.mark.parametrize("batch_size", [5, 64])
def test_retrieval_matches_clip_benchmark(eval_root, tiny_model, reference, batch_size):
    model, preprocess, tokenizer = tiny_model
    es = open_eval_set(eval_root / "wds_retrieval-flickr30k_test", kind="retrieval")
    metrics = evaluate_retrieval(model, preprocess, tokenizer, es, "cpu", batch_size, 0)
    _same(metrics, reference["retrieval/flickr30k"])
    assert metrics["image_retrieval_recall@10"] > metrics["image_retrieval_recall@1"]
