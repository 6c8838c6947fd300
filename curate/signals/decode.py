"""Decode untrusted image bytes once per sample, for every image signal of a pass.

Why: a pool holds whatever the web served: truncated files, zero bytes, HTML, decompression bombs,
1x100000 strips, 16-bit, CMYK and animated images. One bad sample must never stop a stage, so this
module never raises for bad data: it returns the image or a short machine-readable reason, which
the stage writes as the sample's status. The pixel count is bounded from the header, before any
pixel is decoded.

The image is kept as Pillow opened it (first frame, original mode, no EXIF rotation), because the
pHash column must equal `imagehash.phash(Image.open(...))` on the same bytes. The converted forms
are made here, once: "L" exactly as imagehash makes it (`image.convert("L")`) and "RGB" for models.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import IO

from PIL import Image, UnidentifiedImageError

OK = "ok"
EMPTY = "empty"  # zero bytes
UNIDENTIFIED = "unidentified"  # not an image format Pillow knows (HTML, random bytes)
TRUNCATED = "truncated"  # the pixel data ends early
CORRUPT = "corrupt"  # the header or the pixel data is invalid
TOO_MANY_PIXELS = "too_many_pixels"  # width * height above DecodeLimits.max_pixels
ASPECT_RATIO = "aspect_ratio"  # max(w, h) / min(w, h) above DecodeLimits.max_aspect_ratio
UNSUPPORTED_MODE = "unsupported_mode"  # a pixel mode that cannot become the requested form
REASONS = (EMPTY, UNIDENTIFIED, TRUNCATED, CORRUPT, TOO_MANY_PIXELS, ASPECT_RATIO, UNSUPPORTED_MODE)

FORMS = ("L", "RGB")


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds checked on the header, before decoding.

    max_pixels defaults to Pillow's own bomb limit (Image.MAX_IMAGE_PIXELS at import); Pillow refuses
    more than twice its limit by itself, which is reported here as too_many_pixels as well.
    """

    max_pixels: int = 89_478_485
    max_aspect_ratio: float = 200.0


DEFAULT_LIMITS = DecodeLimits()
# For training and evaluation: the pixel bound only. They use the samples they are given, whatever their shape.
PIXELS_ONLY = DecodeLimits(max_aspect_ratio=float("inf"))


@dataclass
class Decoded:
    """One sample's decode: `status` is OK or a reason; the images are None unless OK."""

    status: str
    image: Image.Image | None = None
    width: int = 0
    height: int = 0
    format: str | None = None
    forms: dict[str, Image.Image] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def luminance(self) -> Image.Image | None:
        """The "L" image pHash starts from (`image.convert("L")`)."""
        return self.forms.get("L")

    @property
    def rgb(self) -> Image.Image | None:
        """`image.convert("RGB")`, what CLIP preprocessing expects."""
        return self.forms.get("RGB")


def _failure(status: str, im: Image.Image | None = None, fmt: str | None = None) -> Decoded:
    w, h = im.size if im is not None else (0, 0)
    return Decoded(status=status, width=w, height=h, format=fmt)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return TOO_MANY_PIXELS
    if isinstance(exc, UnidentifiedImageError):
        return UNIDENTIFIED
    if isinstance(exc, OSError) and "truncated" in str(exc).lower():
        return TRUNCATED
    return CORRUPT


def convert(image: Image.Image, form: str) -> Image.Image:
    """`image.convert(form)`, skipping the copy when the mode is already `form` (same pixels)."""
    return image if image.mode == form else image.convert(form)


def size_refusal(width: int, height: int, limits: DecodeLimits) -> str | None:
    """Why an image of this header size is refused before decoding (None: it may be decoded)."""
    if width <= 0 or height <= 0:
        return CORRUPT
    if width * height > limits.max_pixels:
        return TOO_MANY_PIXELS
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        return ASPECT_RATIO
    return None


def header_refusal(stream: IO[bytes], limits: DecodeLimits) -> str | None:
    """Read only the header of the image in `stream` and say why it must not be decoded, or None.

    For decoders other than Pillow's (the downloader's OpenCV): they allocate from the header without a bound.
    An image Pillow cannot identify is refused too, since its size cannot be bounded before decoding.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(stream) as im:
                return size_refusal(*im.size, limits)
        except Exception as exc:  # untrusted bytes
            return _reason(exc)


def decode_image(
    data: bytes | bytearray | memoryview | None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    forms: tuple[str, ...] = FORMS,
) -> Decoded:
    """Decode `data` into its first frame and the requested `forms` ("L", "RGB"); never raises for bad data."""
    if not data:
        return Decoded(status=EMPTY)
    im = None
    fmt = None
    # Pillow warns on large images, odd EXIF and palette quirks; under `-W error` those warnings
    # would become exceptions. Here they are data problems, answered by the status, not warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data))
            fmt = im.format
            refused = size_refusal(*im.size, limits)
            if refused:
                return _failure(refused, im, fmt)
            im.load()
        except Exception as exc:  # untrusted bytes: any decoder failure is the sample's status
            return _failure(_reason(exc), im, fmt)
        out = {}
        for form in forms:
            try:
                out[form] = convert(im, form)
            except Exception:  # e.g. "LAB" has no "L" conversion; imagehash would raise too
                return _failure(UNSUPPORTED_MODE, im, fmt)
    return Decoded(status=OK, image=im, width=im.width, height=im.height, format=fmt, forms=out)
