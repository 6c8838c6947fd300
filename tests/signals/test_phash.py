"""The fast pHash equals `str(imagehash.phash(Image.open(bytes)))` on every kind of image a pool holds."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from curate.signals import phash as ph
from curate.signals.decode import DecodeLimits, decode_image

from .images import corpus, noise, smooth

CORPUS = corpus(seed=0)
LIMITS = DecodeLimits(max_aspect_ratio=1000.0)


def reference(data: bytes) -> str:
    return str(imagehash.phash(Image.open(io.BytesIO(data))))


def test_corpus_is_large_and_varied():
    modes = set()
    for _, data in CORPUS:
        modes.add(Image.open(io.BytesIO(data)).mode)
    assert len(CORPUS) >= 250
    assert {"RGB", "L", "P", "RGBA", "LA", "CMYK", "I;16", "1", "F"} <= modes


def test_decoded_phash_equals_imagehash_on_corpus():
    mismatches = []
    for name, data in CORPUS:
        dec = decode_image(data, LIMITS, forms=("L",))
        assert dec.ok, (name, dec.status)
        got = ph.phash(dec.luminance)
        if got != reference(data):
            mismatches.append((name, got, reference(data)))
    assert mismatches == []


def test_stage_path_equals_imagehash_on_corpus():
    # The stage's way: the image as decoded (RGB and L read in place, other modes converted by Pillow),
    # 32x32 pixels per image, one batched DCT.
    images = [decode_image(d, LIMITS, forms=()).image for _, d in CORPUS]
    pixels = np.stack([ph.pixels32(ph.luminance_source(im)) for im in images])
    assert ph.uint64_to_hex(ph.hash_pixels(pixels)) == [reference(d) for _, d in CORPUS]


def test_rgb_and_l_skip_pillow_convert(monkeypatch):
    converted = []
    real = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: converted.append(self.mode) or real(self, *a, **k))
    modes = set()
    for _, data in CORPUS:
        im = decode_image(data, LIMITS, forms=()).image
        modes.add(im.mode)
        ph.pixels32(im)
    assert {"RGB", "L", "CMYK", "P", "RGBA"} <= modes
    assert converted and not {"RGB", "L"} & set(converted)
    assert {"CMYK", "P", "RGBA"} <= set(converted)


def test_phash_of_any_mode_equals_imagehash():
    # phash() converts to "L" itself, like imagehash, whatever mode it is handed.
    for name, data in CORPUS[::3]:
        im = Image.open(io.BytesIO(data))
        assert ph.phash(im) == str(imagehash.phash(im)), name


def test_batch_equals_single_and_imagehash():
    images = [decode_image(d, LIMITS, forms=("L",)).luminance for _, d in CORPUS]
    batch = ph.phash_batch(images)
    assert batch.dtype == np.uint64 and batch.shape == (len(CORPUS),)
    assert ph.uint64_to_hex(batch) == [reference(d) for _, d in CORPUS]
    assert ph.phash_batch([]).shape == (0,)


def test_random_sizes_and_contents_equal_imagehash():
    rng = np.random.default_rng(7)
    for _ in range(120):
        w, h = int(rng.integers(1, 700)), int(rng.integers(1, 700))
        im = smooth(rng, w, h) if rng.random() < 0.5 else noise(rng, w, h, channels=1)
        assert ph.phash(im) == str(imagehash.phash(im)), (w, h)


def test_near_ties_fall_back_to_scipy(monkeypatch):
    calls = []
    real = ph._reference_bits
    monkeypatch.setattr(ph, "_reference_bits", lambda px: calls.append(1) or real(px))
    flat = Image.new("L", (50, 40), 77)
    assert ph.phash(flat) == str(imagehash.phash(flat))
    assert calls, "a flat image has all AC coefficients tied at the median: it must take the scipy path"
    calls.clear()
    textured = smooth(np.random.default_rng(1), 200, 150)
    assert ph.phash(textured) == str(imagehash.phash(textured))
    assert not calls, "a textured image has no near-tie: the fast path must answer"


def test_images_at_exact_tie_construction():
    # Images symmetric left-right make every odd-column coefficient exactly 0 in exact arithmetic
    # (half the block), so the median sits on a tie; both paths must still agree with imagehash.
    rng = np.random.default_rng(3)
    for _ in range(20):
        half = rng.integers(0, 256, (64, 32), dtype=np.uint8)
        im = Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))
        assert ph.phash(im) == str(imagehash.phash(im))


def test_hex_uint64_round_trip_uses_imagehash_bit_order():
    rng = np.random.default_rng(5)
    for _ in range(20):
        im = noise(rng, 80, 60)
        ref = imagehash.phash(im)
        value = ph.phash_int(im)
        bits = [(value >> (63 - i)) & 1 for i in range(64)]  # first bit most significant
        assert bits == ref.hash.flatten().astype(int).tolist()
        assert ph.hex_to_int(str(ref)) == value
        assert ph.int_to_hex(value) == str(ref)
        assert imagehash.hex_to_hash(ph.int_to_hex(value)) == ref
    arr = ph.hex_to_uint64(["0000000000000000", "ffffffffffffffff", "8000000000000001"])
    assert arr.dtype == np.uint64
    assert arr.tolist() == [0, 2**64 - 1, 2**63 + 1]
    assert ph.uint64_to_hex(arr) == ["0000000000000000", "ffffffffffffffff", "8000000000000001"]
    with pytest.raises(ValueError):
        ph.hex_to_int("abc")


def test_hamming_equals_imagehash_difference():
    rng = np.random.default_rng(9)
    ims = [smooth(rng, 120, 90) for _ in range(6)]
    refs = [imagehash.phash(im) for im in ims]
    values = ph.phash_batch(ims)
    dist = ph.hamming(values[:, None], values[None, :])
    for i in range(6):
        for j in range(6):
            assert dist[i, j] == refs[i] - refs[j]


def test_hash_pixels_rejects_wrong_shape():
    with pytest.raises(ValueError):
        ph.hash_pixels(np.zeros((2, 16, 16), np.uint8))
