"""Encoded test images of every kind a web pool serves, made deterministically in memory."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(rng: np.random.Generator, w: int, h: int, channels: int = 3) -> Image.Image:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def smooth(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A photo-like image: low-frequency colour waves plus mild noise (what JPEG pools mostly hold)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    f = rng.uniform(0.5, 6.0, size=(3, 2)) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi, size=3)
    chans = [np.sin(f[c, 0] * x / w + f[c, 1] * y / h + phase[c]) for c in range(3)]
    arr = 127.5 + 100 * np.stack(chans, axis=-1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def gradient(w: int, h: int, direction: str) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    v = {"h": x / max(w - 1, 1), "v": y / max(h - 1, 1), "d": (x + y) / max(w + h - 2, 1)}[direction]
    return Image.fromarray((v * 255).round().astype(np.uint8), "L")


def shapes(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    im = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 6))):
        x0, x1 = sorted(rng.integers(0, w, 2).tolist())
        y0, y1 = sorted(rng.integers(0, h, 2).tolist())
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return im


def animated(rng: np.random.Generator, fmt: str, w: int = 64, h: int = 48, n: int = 3) -> bytes:
    frames = [noise(rng, w, h) for _ in range(n)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def exif_rotated_jpeg(rng: np.random.Generator, w: int = 120, h: int = 80, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(smooth(rng, w, h), "JPEG", exif=exif.tobytes())


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over an empty IDAT: a bomb that allocates nothing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@functools.lru_cache(maxsize=2)
def corpus(seed: int = 0) -> tuple[tuple[str, bytes], ...]:
    """(name, encoded bytes) for a few hundred images across formats, modes, sizes and contents."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bytes]] = []

    def add(name: str, data: bytes) -> None:
        out.append((name, data))

    for i in range(60):  # photo-like and noisy JPEG/PNG/WebP of assorted sizes
        w, h = int(rng.integers(16, 420)), int(rng.integers(16, 420))
        im = smooth(rng, w, h) if i % 3 else noise(rng, w, h)
        fmt = ("JPEG", "PNG", "WEBP")[i % 3]
        add(f"{fmt.lower()}_{w}x{h}_{i}", encode(im, fmt))
    base = smooth(rng, 333, 250)
    for q in (5, 10, 25, 50, 75, 90, 95, 100):  # one image re-encoded at several qualities
        add(f"jpeg_q{q}", encode(base, "JPEG", quality=q))
        add(f"webp_q{q}", encode(base, "WEBP", quality=q))
    for sub in (0, 1, 2):  # 4:4:4, 4:2:2, 4:2:0 chroma
        add(f"jpeg_sub{sub}", encode(base, "JPEG", quality=85, subsampling=sub))
    add("webp_lossless", encode(base, "WEBP", lossless=True))
    for i in range(30):
        w, h = int(rng.integers(8, 300)), int(rng.integers(8, 300))
        add(f"gradient_{i}", encode(gradient(w, h, "hvd"[i % 3]), "PNG"))
        add(f"shapes_{i}", encode(shapes(rng, w, h), ("PNG", "JPEG")[i % 2]))
    for c in (0, 1, 17, 128, 254, 255):  # flat images: every AC coefficient ties at the median
        add(f"flat_L_{c}", encode(Image.new("L", (64, 48), c), "PNG"))
        add(f"flat_RGB_{c}", encode(Image.new("RGB", (100, 75), (c, 255 - c, c // 2)), "PNG"))
        add(f"flat_jpeg_{c}", encode(Image.new("RGB", (90, 60), (c, c, c)), "JPEG"))
    for w, h in ((1, 1), (1, 2), (2, 1), (3, 500), (500, 3), (31, 31), (32, 32), (33, 33), (32, 400),
                 (400, 32), (5, 40), (40, 5), (64, 97), (64, 96), (100, 169), (100, 168)):
        add(f"tiny_or_edge_{w}x{h}", encode(noise(rng, w, h), "PNG"))
    for i in range(10):  # grayscale
        w, h = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        g = smooth(rng, w, h).convert("L")
        add(f"gray_jpeg_{i}", encode(g, "JPEG"))
        add(f"gray_png_{i}", encode(g, "PNG"))
    for i in range(6):
        im = smooth(rng, int(rng.integers(40, 260)), int(rng.integers(40, 260)))
        add(f"cmyk_jpeg_{i}", encode(im.convert("CMYK"), "JPEG"))
        pal = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
        add(f"palette_png_{i}", encode(pal, "PNG"))
        add(f"palette_png_transparent_{i}", encode(pal, "PNG", transparency=int(rng.integers(0, 32))))
        rgba = im.copy()
        rgba.putalpha(Image.fromarray(rng.integers(0, 256, (im.height, im.width), dtype=np.uint8)))
        add(f"rgba_png_{i}", encode(rgba, "PNG"))
        add(f"rgba_webp_{i}", encode(rgba, "WEBP"))
        la = rgba.convert("LA")
        add(f"la_png_{i}", encode(la, "PNG"))
        a16 = np.asarray(im.convert("L"), dtype=np.int64) * 257 + rng.integers(0, 257, (im.height, im.width))
        add(f"png16_{i}", encode(Image.fromarray(np.minimum(a16, 65535).astype(np.uint16)), "PNG"))
        add(f"bilevel_{i}", encode(im.convert("1"), "PNG"))
        add(f"gif_{i}", encode(im, "GIF"))
        add(f"tiff_float_{i}", encode(Image.fromarray(np.asarray(im.convert("L"), np.float32) * 1.3), "TIFF"))
        add(f"bmp_{i}", encode(im, "BMP"))
    for fmt in ("GIF", "PNG", "WEBP"):
        add(f"animated_{fmt.lower()}", animated(rng, fmt))
    for o in (3, 6, 8):
        add(f"exif_orientation_{o}", exif_rotated_jpeg(rng, orientation=o))
    return tuple(out)
