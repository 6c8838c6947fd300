"""decode_image never raises for bad bytes, names the reason, and bounds pixels before decoding."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from curate.signals import decode as dec
from curate.signals.decode import DecodeLimits, decode_image

from .images import animated, corpus, encode, exif_rotated_jpeg, noise, png_header, smooth

RNG_SEED = 11


@pytest.fixture
def rng():
    return np.random.default_rng(RNG_SEED)


def test_empty_and_none():
    assert decode_image(b"").status == dec.EMPTY
    assert decode_image(None).status == dec.EMPTY


def test_random_bytes_and_html_are_unidentified(rng):
    assert decode_image(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()).status == dec.UNIDENTIFIED
    assert decode_image(b"<html><body>404 not found</body></html>").status == dec.UNIDENTIFIED


def test_truncated_jpeg(rng):
    data = encode(smooth(rng, 300, 200), "JPEG")
    for cut in (len(data) // 3, len(data) // 2, len(data) - 100):
        out = decode_image(data[:cut])
        assert out.status == dec.TRUNCATED and out.image is None
        assert (out.width, out.height) == (300, 200)  # the header was read


def test_damaged_files_fail_without_raising(rng):
    # Truncations and byte flips of every format: whatever Pillow makes of them, never an exception.
    statuses = set()
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"):
        data = encode(noise(rng, 120, 90), fmt)
        for cut in (8, 40, len(data) // 2):
            statuses.add(decode_image(data[:cut]).status)
        for _ in range(15):
            broken = bytearray(data)
            pos = rng.integers(0, len(broken), 20)
            broken[pos[0]:pos[0] + 1] = b""  # also shift everything after one point
            for p in pos[1:]:
                if p < len(broken):
                    broken[p] = int(rng.integers(0, 256))
            out = decode_image(bytes(broken))
            statuses.add(out.status)
            assert (out.image is not None) == out.ok
    assert statuses <= {dec.OK, *dec.REASONS}
    assert {dec.TRUNCATED, dec.UNIDENTIFIED} <= statuses


def test_bomb_header_is_refused_without_allocating():
    # 100000 x 100000 is 10 gigapixels: Pillow's own bomb error, reported as too_many_pixels.
    assert decode_image(png_header(100_000, 100_000)).status == dec.TOO_MANY_PIXELS
    # 10000 x 10000 is above the limit but below Pillow's hard error: our check, and no warning escapes.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode_image(png_header(10_000, 10_000))
    assert out.status == dec.TOO_MANY_PIXELS
    assert (out.width, out.height) == (10_000, 10_000)


def test_pixel_limit_is_configurable(rng):
    data = encode(noise(rng, 40, 40), "PNG")
    assert decode_image(data, DecodeLimits(max_pixels=1599)).status == dec.TOO_MANY_PIXELS
    assert decode_image(data, DecodeLimits(max_pixels=1600)).ok


def test_aspect_ratio(rng):
    wide = encode(noise(rng, 1000, 2), "PNG")
    assert decode_image(wide).status == dec.ASPECT_RATIO
    assert decode_image(encode(noise(rng, 2, 1000), "PNG")).status == dec.ASPECT_RATIO
    assert decode_image(wide, DecodeLimits(max_aspect_ratio=500)).ok
    assert decode_image(encode(noise(rng, 3, 500), "PNG")).ok  # 166:1 passes the default 200:1
    # The header alone decides: a bomb-sized strip is refused without decoding either way.
    assert decode_image(png_header(80_000_000, 1)).status == dec.ASPECT_RATIO


def test_unsupported_mode():
    data = encode(Image.new("LAB", (10, 10)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "LAB"
    assert decode_image(data).status == dec.UNSUPPORTED_MODE
    assert decode_image(data, forms=("RGB",)).ok  # LAB has an RGB conversion, only "L" is missing


@pytest.mark.parametrize("mode", ["I;16", "CMYK", "P", "LA", "RGBA", "1", "F", "L", "RGB"])
def test_modes_decode_to_both_forms(mode, rng):
    base = smooth(rng, 64, 48)
    if mode == "I;16":
        im, fmt = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 200)), "PNG"
    elif mode == "F":
        im, fmt = Image.fromarray(np.asarray(base.convert("L"), np.float32)), "TIFF"
    elif mode == "CMYK":
        im, fmt = base.convert("CMYK"), "JPEG"
    else:
        im, fmt = base.convert(mode), "PNG"
    data = encode(im, fmt)
    original = Image.open(io.BytesIO(data))
    assert original.mode == mode
    out = decode_image(data)
    assert out.ok and out.image.mode == mode
    assert out.rgb.mode == "RGB" and out.luminance.mode == "L"
    assert np.array_equal(np.asarray(out.luminance), np.asarray(original.convert("L")))
    assert np.array_equal(np.asarray(out.rgb), np.asarray(original.convert("RGB")))


def test_forms_are_only_those_asked(rng):
    out = decode_image(encode(smooth(rng, 30, 20), "JPEG"), forms=("L",))
    assert out.ok and out.rgb is None and out.luminance is not None
    out = decode_image(encode(smooth(rng, 30, 20), "JPEG"), forms=())
    assert out.ok and out.forms == {}


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_takes_first_frame(fmt, rng):
    data = animated(rng, fmt)
    first = Image.open(io.BytesIO(data))
    assert first.n_frames == 3
    out = decode_image(data)
    assert out.ok
    assert np.array_equal(np.asarray(out.rgb), np.asarray(first.convert("RGB")))
    second = Image.open(io.BytesIO(data))
    second.seek(1)
    assert not np.array_equal(np.asarray(out.rgb), np.asarray(second.convert("RGB")))


def test_exif_orientation_is_not_applied(rng):
    # imagehash hashes the stored pixels; so do we (a rotated copy would hash differently).
    data = exif_rotated_jpeg(rng, 120, 80, orientation=6)
    out = decode_image(data)
    assert out.ok and (out.width, out.height) == (120, 80)
    assert out.image.getexif().get(0x0112) == 6


def test_whole_corpus_decodes():
    for name, data in corpus(seed=0):
        out = decode_image(data, DecodeLimits(max_aspect_ratio=1000.0))
        assert out.ok, (name, out.status)
        assert out.format in {"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"}
