"""Tiny webdataset shards for the trainer's tests: coloured images with captions that name the colour."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 40)}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims any size and holds one empty row of pixel data: Pillow opens it from its header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


def image_bytes(rng: np.random.Generator, colour, size: int, fmt: str = "JPEG") -> bytes:
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_shards(folder: Path, n_shards: int = 2, per_shard: int = 16, size: int = 40, seed: int = 0,
                 bad: dict | None = None) -> list[Path]:
    """Write n_shards tars; `bad` maps a sample index in each shard to 'corrupt'|'no_image'|'no_caption'|'bomb'
    (a PNG whose header declares 10000 x 10000 pixels, over Pillow's bomb limit but under twice it)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    paths = []
    for s in range(n_shards):
        path = folder / f"{s:08d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                key = f"{s:04d}{i:04d}"
                colour = names[int(rng.integers(len(names)))]
                kind = (bad or {}).get(i)
                if kind != "no_image":
                    if kind == "bomb":
                        _add(tar, f"{key}.png", png_header(10_000, 10_000))
                    else:
                        data = b"\xff\xd8not a jpeg" if kind == "corrupt" else image_bytes(rng, COLOURS[colour], size)
                        _add(tar, f"{key}.jpg", data)
                if kind != "no_caption":
                    _add(tar, f"{key}.txt", f"a photo of a {colour} square".encode())
                _add(tar, f"{key}.json", json.dumps({"uid": f"{s:016x}{i:016x}"}).encode())
        paths.append(path)
    return paths
