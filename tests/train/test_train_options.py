"""Options beyond DataComp (FLIP, CLIPA, augmentation, SigLIP, torch.compile, grad checkpointing, --model): each
has its real effect on a short `train` run and is marked non-standard in info.json, log.jsonl and checkpoints."""

import math
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.loss import SigLipLoss
from PIL import Image

from train import checkpoint, cli, loop
from train import model as model_lib
from train.logs import read_info, read_log
from train.scales import get_scale

MODELS = Path(__file__).parent / "models"
STANDARD = {"batch_size_per_rank": 8, "samples_seen": 16}  # what every run here overrides: two steps of 8


def _train(shards, run, *extra):
    return cli.main(["--scale", "tiny", "--data", str(shards), "--output", str(run), "--workers", "0",
                     "--no-progress", "--samples", "16", "--batch-size", "8", "--checkpoint-every", "2", *extra])


def _marked(run) -> dict:
    """The run's non-standard options, checked to be the same in info.json, log.jsonl and both checkpoints."""
    marked = read_info(run)["non_standard"]
    opening = [r for r in read_log(run) if r.get("event") == "start"]
    assert len(opening) == 1 and opening[0]["non_standard"] == marked
    assert checkpoint.load(checkpoint.latest(run))["options"] == marked
    assert checkpoint.load(checkpoint.final_path(run))["options"] == marked
    return marked


def _loads_in_open_clip(run, name="datacomp-tiny", **kwargs):
    """final.pt loads with open_clip's own factory, weight for weight."""
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(checkpoint.final_path(run)), **kwargs)
    trained = checkpoint.load(checkpoint.final_path(run))["state_dict"]
    assert model.state_dict().keys() == trained.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    return model, preprocess


@pytest.fixture
def built(monkeypatch):
    """What the run built: its model (initial weights, image shapes and ViT tokens seen) and train transform."""
    seen = {"images": [], "tokens": []}
    real = model_lib.create

    def create(*args, **kwargs):
        model, preprocess, tokenizer = real(*args, **kwargs)
        seen.update(model=model, preprocess=preprocess,
                    initial={k: v.clone() for k, v in model.state_dict().items()})
        model.visual.register_forward_pre_hook(lambda _m, inputs: seen["images"].append(tuple(inputs[0].shape)))
        if hasattr(model.visual, "patch_dropout"):
            model.visual.patch_dropout.register_forward_hook(lambda _m, _i, out: seen["tokens"].append(out.shape[1]))
        return model, preprocess, tokenizer

    monkeypatch.setattr(model_lib, "create", create)
    return seen


def test_patch_dropout_drops_patches_while_training(shards, tmp_path, built, caplog):
    run = tmp_path / "run"
    assert _train(shards, run, "--patch-dropout", "0.5") == 0
    assert _marked(run) == {**STANDARD, "patch_dropout": 0.5}
    assert "non-standard run" in caplog.text and "patch_dropout" in caplog.text
    # 32 px images in 8 px patches: 16 patches, of which FLIP keeps 8, plus the class token
    assert len(built["tokens"]) == 2 and set(built["tokens"]) == {1 + 8}
    model = built["model"].eval()  # evaluation sees every patch
    model.encode_image(torch.zeros(1, 3, 32, 32))
    assert built["tokens"][-1] == 1 + 16
    assert model_lib.train_flops_per_sample("datacomp-tiny", 0.5) < model_lib.train_flops_per_sample("datacomp-tiny")


def test_image_size_trains_and_saves_at_the_reduced_resolution(shards, tmp_path, built):
    run = tmp_path / "run"
    assert _train(shards, run, "--image-size", "16") == 0
    assert _marked(run) == {**STANDARD, "image_size": 16}
    assert set(built["images"]) == {(8, 3, 16, 16)}  # datacomp-tiny's own size is 32
    model, preprocess = _loads_in_open_clip(run, force_image_size=16)
    assert model.visual.positional_embedding.shape == (1 + (16 // 8) ** 2, 64)
    assert preprocess(Image.new("RGB", (40, 40))).shape == (3, 16, 16)
    flops = model_lib.train_flops_per_sample
    assert flops("datacomp-tiny", 0.0, 16) < flops("datacomp-tiny")


@pytest.mark.parametrize("re_prob", [None, "0.6"])
def test_augmentation_options_reach_the_train_transform(shards, tmp_path, built, re_prob):
    run = tmp_path / "run"
    extra = ("--re-prob", re_prob) if re_prob else ()
    assert _train(shards, run, "--aug-scale", "0.3", "0.5", *extra) == 0
    marked = {**STANDARD, "aug_scale": [0.3, 0.5]}
    assert _marked(run) == ({**marked, "re_prob": 0.6} if re_prob else marked)
    steps = built["preprocess"].transforms
    crop = steps[0]  # torchvision's RandomResizedCrop, or timm's when random erasing asks for timm's transforms
    assert "RandomResizedCrop" in type(crop).__name__ and tuple(crop.scale) == (0.3, 0.5)
    erasing = [t for t in steps if type(t).__name__ == "RandomErasing"]
    assert [t.probability for t in erasing] == ([0.6] if re_prob else [])


def test_random_erasing_erases(tmp_path):
    """--re-prob 1 puts noise into a flat image; without it the crop of a flat image stays flat."""
    scale = get_scale("tiny")
    flat = Image.new("RGB", (40, 40), (200, 30, 30))
    for re_prob, noisy in ((1.0, True), (None, False)):
        aug = loop.Options(scale=scale, data="", output=tmp_path, re_prob=re_prob).aug_cfg()
        _, preprocess, _ = model_lib.create("datacomp-tiny", torch.device("cpu"), aug_cfg=aug)
        torch.manual_seed(0)
        assert bool(preprocess(flat).std(dim=(1, 2)).max() > 0.1) == noisy


def test_siglip_loss_and_its_trained_logit_bias(shards, tmp_path, built, monkeypatch):
    made = []
    real = loop.make_loss
    monkeypatch.setattr(loop, "make_loss", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    run = tmp_path / "run"
    assert _train(shards, run, "--siglip") == 0
    assert _marked(run) == {**STANDARD, "loss": "siglip"}
    assert len(made) == 1 and isinstance(made[0], SigLipLoss)
    # SigLIP's initialisation, then trained (a bias: not weight-decayed)
    assert built["initial"]["logit_bias"].item() == -10.0
    assert built["initial"]["logit_scale"].item() == pytest.approx(math.log(10))
    model = built["model"]
    no_decay = model_lib.optimizer(model, get_scale("tiny")).param_groups[0]
    assert no_decay["weight_decay"] == 0 and any(p is model.logit_bias for p in no_decay["params"])
    trained = checkpoint.load(checkpoint.final_path(run))["state_dict"]
    assert trained["logit_bias"].item() != -10.0
    _loads_in_open_clip(run, init_logit_bias=-10.0)


def test_torch_compile_trains_the_compiled_model(shards, tmp_path, monkeypatch):
    graphs = []

    def backend(graph, _example_inputs):
        graphs.append(graph)
        return graph.forward  # dynamo's captured graph as is: inductor's C++ build takes minutes on a small CPU

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **_: real(model, backend=backend))
    compiled, eager = tmp_path / "compiled", tmp_path / "eager"
    try:
        assert _train(shards, compiled, "--torch-compile") == 0
    finally:
        torch._dynamo.reset()
    assert graphs, "the training forward did not go through torch.compile"
    assert _marked(compiled) == {**STANDARD, "torch_compile": True}
    assert _train(shards, eager) == 0
    a = checkpoint.load(checkpoint.final_path(compiled))["state_dict"]
    b = checkpoint.load(checkpoint.final_path(eager))["state_dict"]
    assert a.keys() == b.keys()  # saved unwrapped: no "_orig_mod." prefix
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    _loads_in_open_clip(compiled)


@pytest.mark.parametrize("scale_on, flag, recorded", [
    (False, "on", {"grad_checkpointing": True}),
    (True, "off", {"grad_checkpointing": False}),
    (True, None, {}),  # the scale's own setting (DataComp's scales checkpoint)
])
def test_grad_checkpointing_override(shards, tmp_path, monkeypatch, scale_on, flag, recorded):
    """Either way is on the protocol (same gradients, see test_train_accum): recorded as equivalent, not marked."""
    real_scale = cli.get_scale
    monkeypatch.setattr(cli, "get_scale", lambda name: real_scale(name).replace(grad_checkpointing=scale_on))
    calls = []
    real = open_clip.transformer.checkpoint
    monkeypatch.setattr(open_clip.transformer, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    run = tmp_path / "run"
    assert _train(shards, run, *(("--grad-checkpointing", flag) if flag else ())) == 0
    on = flag == "on" or (flag is None and scale_on)
    assert len(calls) == (2 * (2 + 2) if on else 0)  # 2 steps x (2 image + 2 text blocks)
    assert _marked(run) == STANDARD
    info = read_info(run)
    assert info["equivalent_options"] == recorded and info["grad_checkpointing"] == on
    assert info["protocol"]["grad_checkpointing"] == scale_on  # the scale itself is not rewritten
    assert [r["equivalent_options"] for r in read_log(run) if r.get("event") == "start"] == [recorded]


def test_model_with_a_timm_convnext_image_tower(shards, tmp_path, built):
    name = "datacomp-test-convnext"  # timm's convnext_atto at 32 px, untrained, with datacomp-tiny's text tower
    open_clip.add_model_config(MODELS)
    run = tmp_path / "run"
    assert _train(shards, run, "--model", name) == 0
    assert _marked(run) == {**STANDARD, "model": name}
    assert read_info(run)["protocol"]["model"] == name
    visual = built["model"].visual
    assert isinstance(visual, open_clip.timm_model.TimmModel) and type(visual.trunk).__name__ == "ConvNeXt"
    assert set(built["images"]) == {(8, 3, 32, 32)}
    assert [r["mfu"] for r in read_log(run) if "loss" in r] == [None, None]  # no FLOP estimate for timm towers
    _loads_in_open_clip(run, name)
    trained = checkpoint.load(checkpoint.final_path(run))["state_dict"]
    assert not torch.equal(trained["visual.trunk.stem.0.weight"], built["initial"]["visual.trunk.stem.0.weight"])
