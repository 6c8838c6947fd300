"""uint8 on the wire, normalised on the device: the model must see exactly the tensor open_clip's transform makes."""

import io
import pickle
import random

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from train import checkpoint, cli, loop
from train.data import Position, decode_sample, make_loader, resolve_shards
from train.pixels import CHUNK, Pixels
from train_shards import write_shards


def _train_transform(size=224, **aug):
    return open_clip.image_transform(size, is_train=True, mean=open_clip.OPENAI_DATASET_MEAN,
                                     std=open_clip.OPENAI_DATASET_STD, aug_cfg=aug)


def _images(seed=0):
    """Decoded the way the loader decodes: JPEG photos-like noise, a grey PNG, an RGBA PNG, odd sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for mode, size, fmt in [("RGB", (256, 256), "JPEG"), ("RGB", (300, 180), "JPEG"), ("L", (97, 240), "PNG"),
                            ("RGBA", (64, 64), "PNG"), ("RGB", (240, 320), "PNG")]:
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8).squeeze()
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, fmt)
        out.append(decode_sample({"jpg": buf.getvalue(), "txt": b"a caption"})[0])
    return out


def _both(preprocess, images, seed=7):
    """(open_clip's transform, our two halves), each with the same RNGs for the random crops (timm's use `random`)."""
    pixels = Pixels(preprocess)
    torch.manual_seed(seed), random.seed(seed)
    reference = torch.stack([preprocess(im) for im in images])
    torch.manual_seed(seed), random.seed(seed)
    wire = torch.stack([pixels.worker(im) for im in images])
    return reference, wire, pixels


@pytest.mark.filterwarnings("ignore:Unused augmentation")
@pytest.mark.parametrize("size, aug, compiled_crop", [
    (224, {}, True), (32, {}, True),
    (32, {"color_jitter_prob": 1.0, "color_jitter": (0.4, 0.4, 0.4, 0.1)}, False),  # Pillow crops, then jitters
])
def test_uint8_path_is_bit_identical_to_open_clips_transform(size, aug, compiled_crop):
    reference, wire, pixels = _both(_train_transform(size, **aug), _images())
    assert (pixels.fast_crop is not None) == compiled_crop
    assert pixels.uint8 and wire.dtype == torch.uint8 and wire.shape == reference.shape
    assert wire.element_size() * wire.nelement() * 4 == reference.element_size() * reference.nelement()
    assert torch.equal(pixels.to_model(wire), reference)


def test_every_byte_of_every_channel_maps_as_totensor_and_normalize():
    preprocess = _train_transform(224)
    to_tensor, normalize = preprocess.transforms[-2], preprocess.transforms[-1]
    values = np.zeros((256, 3, 3), dtype=np.uint8)  # H=256 rows, each row one byte value, in every channel
    values[:] = np.arange(256, dtype=np.uint8)[:, None, None]
    values[:, 1, 0], values[:, 2, 2] = 255 - np.arange(256), 17  # vary by channel and column too
    reference = normalize(to_tensor(values.copy()))
    wire = torch.from_numpy(values).permute(2, 0, 1).unsqueeze(0)
    assert torch.equal(Pixels(preprocess).to_model(wire.contiguous())[0], reference)


def test_batches_larger_than_a_chunk():
    preprocess = _train_transform(8)
    images = [Image.fromarray(np.full((12, 12, 3), i % 256, dtype=np.uint8)) for i in range(CHUNK + 45)]
    reference, wire, pixels = _both(preprocess, images)
    assert torch.equal(pixels.to_model(wire), reference)


def test_a_transform_that_does_not_end_in_normalize_runs_whole_in_the_worker():
    """timm's transform (random erasing after Normalize) cannot be split: floats cross as before."""
    preprocess = _train_transform(32, re_prob=0.5, use_timm=True)
    reference, wire, pixels = _both(preprocess, _images())
    assert not pixels.uint8 and wire.dtype == torch.float32
    assert torch.equal(wire, reference) and pixels.to_model(wire) is wire


def test_to_model_rejects_a_wrong_shape_and_pickles_without_device_copies():
    pixels = Pixels(_train_transform(32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        pixels.to_model(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
    pixels.to_model(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    assert pixels._on_device and not pickle.loads(pickle.dumps(pixels))._on_device


def test_loader_batches_cross_as_uint8_and_equal_the_float_path(tmp_path):
    """The loader with the split transform and with the whole transform give the model the same batch."""
    write_shards(tmp_path / "s", n_shards=2, per_shard=6)
    preprocess = _train_transform(32)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    shards = resolve_shards(str(tmp_path / "s"))
    pixels = Pixels(preprocess)
    split = next(iter(make_loader(shards, 5, pixels, tokenizer, 3, 0, 0, Position(0))))
    whole = next(iter(make_loader(shards, 5, Pixels(preprocess, uint8=False), tokenizer, 3, 0, 0, Position(0))))
    assert split["images"].dtype == torch.uint8 and whole["images"].dtype == torch.float32
    assert torch.equal(pixels.to_model(split["images"]), whole["images"])
    assert torch.equal(split["texts"], whole["texts"])


def test_training_on_uint8_batches_gives_the_same_weights(shards, tmp_path, monkeypatch):
    """The trainer sends uint8 only to a GPU; forced on CPU, two steps end on exactly the float path's weights."""
    def run(name):
        out = tmp_path / name
        assert cli.main(["--scale", "tiny", "--data", str(shards), "--output", str(out), "--workers", "1",
                         "--no-progress", "--samples", "16", "--batch-size", "8"]) == 0
        return checkpoint.load(checkpoint.final_path(out))["state_dict"]

    used = []
    monkeypatch.setattr(loop, "Pixels", lambda preprocess, uint8: used.append(uint8) or Pixels(preprocess, uint8))
    floats = run("float")
    monkeypatch.setattr(loop, "Pixels", lambda preprocess, uint8: used.append(True) or Pixels(preprocess, True))
    uint8 = run("uint8")
    assert used == [False, True]  # on CPU the trainer chose floats itself
    assert floats.keys() == uint8.keys()
    for key in floats:
        assert torch.equal(floats[key], uint8[key]), key
