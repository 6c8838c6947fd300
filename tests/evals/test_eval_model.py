"""Model loading and the padding-free text encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import evalsynth
from evals.model import CheckpointError, encode_text, encode_texts, load_model


def test_truncated_text_encoding_equals_open_clip(tiny_model):
    model, _, tokenizer = tiny_model
    texts = ["a photo of a cat.", "an extremely long and winding caption about a small red boat on a river at dawn", "x"]
    tokens = tokenizer(texts)
    with torch.inference_mode():
        ref = F.normalize(model.encode_text(tokens), dim=-1)
        ours = encode_text(model, tokens)
        batched = encode_texts(model, tokenizer, texts, batch_size=2, device="cpu")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, ref, atol=1e-5, rtol=0)  # length-sorted batches come back in input order


def test_plain_state_dict_loads_same_weights(tmp_path, tiny_model):
    ckpt = evalsynth.make_tiny_checkpoint(tmp_path / "plain.pt", wrap=False)
    model, _, _ = load_model(evalsynth.TINY_ARCH, str(ckpt))
    for (k, a), b in zip(model.state_dict().items(), tiny_model[0].state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_of_another_architecture_is_named(tmp_path, tiny_ckpt):
    import json
    import open_clip

    cfg = json.loads(evalsynth.TINY_CONFIG.read_text())
    cfg["vision_cfg"]["width"] = 96
    other = tmp_path / "evals-tiny-wide.json"
    other.write_text(json.dumps(cfg))
    open_clip.add_model_config(other)
    with pytest.raises(CheckpointError, match=r"tiny\.pt does not match architecture evals-tiny-wide.*shape"):
        load_model("evals-tiny-wide", str(tiny_ckpt))


def test_unreadable_and_missing_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_model(evalsynth.TINY_ARCH, str(bad))
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        load_model(evalsynth.TINY_ARCH, str(tmp_path / "nope.pt"))
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_model("no-such-arch", str(bad))


def test_siglip_and_reduced_size_checkpoints_of_the_trainer_load(tmp_path):
    """`train --siglip --image-size 16` saves a logit bias and a smaller position table; both loaders
    (evaluate, and curate stage's CLIP signal) rebuild that shape from the checkpoint instead of failing."""
    import open_clip
    from PIL import Image

    from curate.signals.clip import ClipSpec, load_clip
    from evals.model import PROJECT_MODELS

    open_clip.add_model_config(PROJECT_MODELS)
    trained = open_clip.create_model("datacomp-tiny", pretrained=None, init_logit_bias=-10.0, force_image_size=16)
    with torch.no_grad():
        trained.logit_bias.fill_(-7.5)
    path = tmp_path / "final.pt"
    torch.save({"state_dict": trained.state_dict(), "model": "datacomp-tiny",
                "options": {"loss": "siglip", "image_size": 16}}, path)

    model, preprocess, _ = load_model("datacomp-tiny", str(path))
    assert model.logit_bias.item() == -7.5
    assert tuple(preprocess(Image.new("RGB", (40, 30))).shape) == (3, 16, 16)
    for (k, a), b in zip(model.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), k

    loaded = load_clip(ClipSpec("datacomp-tiny", str(path), "t"), "cpu", "fp32")
    assert loaded.model.visual.positional_embedding.shape[0] == (16 // 8) ** 2 + 1
    assert loaded.preprocess_cfg["size"] in (16, (16, 16), [16, 16])
