"""--accum-freq: K micro-batches with cached features give the loss and gradients of the whole batch in one pass."""

import pytest
import torch

from train import checkpoint, cli
from train.distributed import World
from train.logs import read_info, read_log
from train.loop import forward_backward
from train.loss import make_loss
from train.model import create

CAPTIONS = ["a red square", "a photo of a dog", "two blue cats", "the green field", "a yellow bus at night",
            "a red square on white", "an old map", "three apples"]


def _inputs(**options):
    torch.manual_seed(0)
    model, _, tokenizer = create("datacomp-tiny", torch.device("cpu"), **options)
    images = torch.randn(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, images, tokenizer(CAPTIONS)


def _grads(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _step(accum_freq, siglip):
    model, images, texts = _inputs(siglip=siglip)
    loss = forward_backward(model, make_loss(siglip), images, texts, [len(CAPTIONS)], World(), accum_freq=accum_freq)
    return float(loss), _grads(model)


@pytest.mark.parametrize("siglip", [False, True])
@pytest.mark.parametrize("accum_freq", [2, 3])  # 3: micro-batches of 3, 3 and 2
def test_accumulated_gradients_equal_one_pass(accum_freq, siglip):
    loss, expected = _step(1, siglip)
    got_loss, got = _step(accum_freq, siglip)
    assert got_loss == pytest.approx(loss, rel=1e-6)
    assert got.keys() == expected.keys() and "logit_scale" in expected
    for name, grad in expected.items():
        # the logit scale (and SigLIP's bias) too: open_clip_train's accumulation adds theirs once per micro-batch
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_recomputed_micro_batches_replay_their_patch_dropout():
    """With FLIP, each recomputed forward drops the patches its cached forward dropped: the gradient is that of
    one batch whose halves were dropped by two consecutive draws, and the RNG ends where those draws leave it."""
    model, images, texts = _inputs(patch_dropout=0.5)
    loss_fn = make_loss(False)
    torch.manual_seed(5)
    halves = [model(images[:4], texts[:4]), model(images[4:], texts[4:])]
    loss = loss_fn(torch.cat([h["image_features"] for h in halves]), torch.cat([h["text_features"] for h in halves]),
                   halves[0]["logit_scale"])
    loss.backward()
    expected, after = _grads(model), torch.get_rng_state()

    model.zero_grad()
    torch.manual_seed(5)
    got_loss = forward_backward(model, loss_fn, images, texts, [8], World(), accum_freq=2)
    assert float(got_loss) == pytest.approx(float(loss.detach()), rel=1e-6)
    assert torch.equal(torch.get_rng_state(), after)
    for name, grad in expected.items():
        torch.testing.assert_close(_grads(model)[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _train(shards, run, *extra):
    # 19 samples: steps of 8, 8 and a trimmed 3 (micro-batches of 2 and 1 when accumulating)
    return cli.main(["--scale", "tiny", "--data", str(shards), "--output", str(run), "--workers", "0",
                     "--no-progress", "--samples", "19", "--checkpoint-every", "1", *extra])


def _final(run) -> dict:
    return checkpoint.load(checkpoint.final_path(run))["state_dict"]


def _assert_close(a: dict, b: dict) -> None:
    """Weights after a few AdamW steps: almost every element within 1e-5, and none off by more than 1e-4.

    Adam moves an element by about lr * g / (|g| + eps): where a gradient is ~1e-7, the last bits that the
    two runs' different summation orders leave in it move that element by up to ~lr/100 (1.1e-5 seen on an
    AVX-512 machine). A wrong accumulation changes most updates by ~lr (1.25e-4 to 3.75e-4 in these steps)."""
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
        loose = ~torch.isclose(a[name], b[name], rtol=1e-4, atol=1e-5)
        assert int(loose.sum()) <= max(1, loose.numel() // 100), f"{name}: {int(loose.sum())} of {loose.numel()} elements off by > 1e-5"


def test_cli_accumulation_trains_as_the_full_batch(shards, tmp_path):
    whole, accum = tmp_path / "whole", tmp_path / "accum"
    assert _train(shards, whole, "--batch-size", "8") == 0
    assert _train(shards, accum, "--batch-size", "4", "--accum-freq", "2") == 0

    a, b = ([r for r in read_log(run) if "loss" in r] for run in (whole, accum))
    assert [r["samples_seen"] for r in b] == [8, 16, 19]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5)
    _assert_close(_final(accum), _final(whole))

    info_a, info_b = read_info(whole), read_info(accum)
    assert info_a["protocol"] == info_b["protocol"] and info_b["protocol"]["global_batch"] == 8
    # the same run as far as the protocol goes; accumulation is recorded apart, as equivalent
    assert info_a["non_standard"] == info_b["non_standard"] == {"batch_size_per_rank": 8, "samples_seen": 19}
    assert (info_a["equivalent_options"], info_b["equivalent_options"]) == ({}, {"accum_freq": 2})
    assert (info_b["batch_per_rank"], info_b["micro_batch_per_rank"]) == (8, 4)
    opening = next(r for r in read_log(accum) if r.get("event") == "start")
    assert opening["equivalent_options"] == {"accum_freq": 2}


def test_resume_with_accumulation(shards, tmp_path):
    run = tmp_path / "run"
    assert _train(shards, run, "--batch-size", "4", "--accum-freq", "2") == 0
    unbroken = _final(run)

    def crash_after_step_2():
        checkpoint.final_path(run).unlink()
        checkpoint.step_path(run, 3).unlink()

    crash_after_step_2()
    assert _train(shards, run, "--batch-size", "4", "--accum-freq", "2", "--resume", "latest") == 0
    resumed = _final(run)
    for name, value in unbroken.items():
        assert torch.equal(resumed[name], value), name
    assert [r["step"] for r in read_log(run) if "loss" in r] == [1, 2, 3]

    # accumulation does not change the run, so the full batch may continue it (and the other way round)
    crash_after_step_2()
    assert _train(shards, run, "--batch-size", "8", "--resume", "latest") == 0
    _assert_close(_final(run), unbroken)


@pytest.mark.parametrize("patch_dropout", [None, 0.5])
def test_grad_checkpointing_gives_the_same_gradients(patch_dropout):
    """Why --grad-checkpointing is an equivalent option: recomputing the blocks changes no gradient (FLIP's
    patch dropout is drawn before the checkpointed blocks, so it is drawn once either way)."""
    results = []
    for on in (False, True):
        model, images, texts = _inputs(grad_checkpointing=on, patch_dropout=patch_dropout)
        torch.manual_seed(3)
        loss = forward_backward(model, make_loss(False), images, texts, [len(CAPTIONS)], World())
        results.append((float(loss), _grads(model), torch.get_rng_state()))
    (loss, expected, rng), (got_loss, got, got_rng) = results
    assert got_loss == loss and torch.equal(got_rng, rng)
    assert got.keys() == expected.keys() and len(got) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)
