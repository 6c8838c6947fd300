"""The compiled crop must give Pillow's bytes exactly: every size, both pass orders, crops of larger images."""

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms

from train.crop import ResizedCrop, resize_chw, vertical_first
from train.pixels import Pixels


def _pillow(pixels, box, size):
    """torchvision's resized_crop on a PIL image: crop, then resize((w, h), BICUBIC); as (3, h, w)."""
    left, top, right, bottom = box
    out = Image.fromarray(pixels).crop(box).resize((size[1], size[0]), Image.BICUBIC)
    return np.asarray(out).transpose(2, 0, 1)


def _smooth(rng, h, w):
    """Noise plus gradients: both sharp edges (clipping at 0 and 255) and flat runs."""
    noise = rng.integers(0, 256, (h, w, 3)).astype(np.int64)
    ramp = (np.arange(w)[None, :, None] * 3 + np.arange(h)[:, None, None] * 5) % 256
    return np.where(rng.random((h, w, 1)) < 0.5, noise, ramp).astype(np.uint8)


def test_random_sizes_and_crops_equal_pillow():
    rng = np.random.default_rng(0)
    orders = set()
    for _ in range(250):
        h, w = rng.integers(1, 260, 2)
        pixels = _smooth(rng, h, w)
        ch, cw = rng.integers(1, h + 1), rng.integers(1, w + 1)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        oh, ow = rng.integers(1, 260, 2)
        expected = _pillow(pixels, (left, top, left + cw, top + ch), (oh, ow))
        got = resize_chw(pixels[top:top + ch, left:left + cw], (oh, ow))
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        assert np.array_equal(got, expected), (cw, ch, ow, oh)
        orders.add(vertical_first(cw, ch, ow, oh))
    assert orders == {True, False}


@pytest.mark.parametrize("w, h, ow, oh", [
    (100, 150, 90, 130), (100, 151, 90, 130), (100, 152, 90, 130),  # h - oh around 2 * (w - ow)
    (60, 200, 60, 20), (200, 60, 20, 60),  # one pass only
    (224, 224, 224, 224), (1, 1, 224, 224), (300, 2, 7, 224), (256, 243, 224, 224)])
def test_edges_of_the_pass_order_and_single_passes(w, h, ow, oh):
    pixels = _smooth(np.random.default_rng(w * 1000 + h), h, w)
    assert np.array_equal(resize_chw(pixels, (oh, ow)), _pillow(pixels, (0, 0, w, h), (oh, ow)))


def test_rgbx_views_and_bad_input():
    pixels = _smooth(np.random.default_rng(1), 64, 80)
    rgbx = np.concatenate([pixels, np.full((64, 80, 1), 77, np.uint8)], axis=2)  # the 4th byte is ignored
    expected = _pillow(pixels, (3, 5, 70, 60), (32, 40))
    assert np.array_equal(resize_chw(rgbx[5:60, 3:70], (32, 40)), expected)
    with pytest.raises(ValueError, match="uint8 pixels"):
        resize_chw(pixels[..., 0], (8, 8))
    with pytest.raises(ValueError, match="cannot resize"):
        resize_chw(pixels[:0], (8, 8))


def _open_clip_crop(size=224, **aug):
    steps = open_clip.image_transform(size, is_train=True, aug_cfg=aug).transforms
    return transforms.Compose(steps[:-2])  # the part before ToTensor, Normalize


@pytest.mark.parametrize("size, scale", [(224, None), (32, (0.2, 1.0))])
def test_open_clips_crop_is_recognised_and_draws_the_same_crops(size, scale):
    crop = _open_clip_crop(size, **({"scale": scale} if scale else {}))
    fast = ResizedCrop.of(crop.transforms)
    assert fast is not None
    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate([(256, 256), (300, 180), (97, 240), (2100, 2048)]):  # the last: a multi-block image
        image = Image.fromarray(_smooth(rng, h, w))
        torch.manual_seed(i)
        expected, rng_after = np.asarray(crop(image)).transpose(2, 0, 1), torch.get_rng_state()
        torch.manual_seed(i)
        got = fast(image)
        assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), expected)
        assert torch.equal(torch.get_rng_state(), rng_after)  # the same draws, no more


@pytest.mark.filterwarnings("ignore:Unused augmentation")  # open_clip warns, yet applies the jitter
def test_other_crops_stay_with_pillow():
    bilinear = transforms.RandomResizedCrop(32, interpolation=transforms.InterpolationMode.BILINEAR)
    bicubic = transforms.RandomResizedCrop(32, interpolation=transforms.InterpolationMode.BICUBIC)
    assert ResizedCrop.of([bilinear]) is None
    assert ResizedCrop.of([bicubic, transforms.ColorJitter(0.4)]) is None
    assert ResizedCrop.of([transforms.CenterCrop(32)]) is None
    assert ResizedCrop.of([bicubic]) is not None
    jitter = open_clip.image_transform(32, is_train=True, aug_cfg={"color_jitter_prob": 1.0,
                                                                    "color_jitter": (0.4, 0.4, 0.4, 0.1)})
    pixels = Pixels(jitter)
    assert pixels.uint8 and pixels.fast_crop is None  # still uint8 on the wire, cropped by Pillow
    assert Pixels(open_clip.image_transform(32, is_train=True)).fast_crop is not None
