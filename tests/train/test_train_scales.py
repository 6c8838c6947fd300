"""configs/scales.yaml carries DataComp's exact protocol, and a wrong scale name is explained."""

import pytest

from train.scales import UnknownScale, get_scale, load_scales

# DataComp's table (DESIGN.md): samples seen, model, global batch, lr, warmup, beta2, precision
DATACOMP = {
    "debug": (128_000, "ViT-B-32", 1024, 1e-4, 500, 0.98, "amp"),
    "small": (12_800_000, "ViT-B-32", 4096, 5e-4, 500, 0.98, "amp"),
    "medium": (128_000_000, "ViT-B-32", 4096, 5e-4, 500, 0.98, "amp"),
    "large": (1_280_000_000, "ViT-B-16", 8192, 5e-4, 500, 0.98, "amp"),
    "xlarge": (12_800_000_000, "ViT-L-14", 90112, 1e-3, 10_000, 0.95, "amp_bf16"),
}


@pytest.mark.parametrize("name", sorted(DATACOMP))
def test_datacomp_scales_are_exact(name):
    s = get_scale(name)
    assert (s.samples_seen, s.model, s.global_batch, s.lr, s.warmup, s.beta2, s.precision) == DATACOMP[name]
    assert (s.weight_decay, s.beta1, s.eps, s.grad_checkpointing) == (0.2, 0.9, 1e-6, True)


def test_steps_cover_the_budget_exactly():
    s = get_scale("xlarge")
    # 12.8B / 90112 is not whole: the last step is a partial batch
    assert (s.steps - 1) * s.global_batch < s.samples_seen <= s.steps * s.global_batch
    assert get_scale("small").steps == 3125


def test_unknown_scale_lists_known_ones():
    with pytest.raises(UnknownScale) as e:
        get_scale("huge")
    for name in load_scales():
        assert name in str(e.value)


def test_cli_unknown_scale(tmp_path, capsys):
    from train.cli import main

    assert main(["--scale", "huge", "--data", str(tmp_path), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown scale 'huge'" in err and "small" in err and "tiny" in err
    assert not (tmp_path / "run").exists()


def test_help_lists_scales(capsys):
    from train.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "xlarge (12,800,000,000 samples, ViT-L-14, batch 90112)" in out and "--resume" in out


def test_tiny_model_is_registered_with_open_clip():
    import torch

    from train.model import create

    model, preprocess, tokenizer = create(get_scale("tiny").model, torch.device("cpu"))
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 5_000_000
    tokens = tokenizer(["a photo of a red square"])
    out = model(torch.zeros(1, 3, 32, 32), tokens)
    assert out["image_features"].shape == out["text_features"].shape == (1, 64)
