"""A CommonPool in miniature: generated images with captions, and the kinds of breakage real pools have.

Each image is a coloured shape on a softly shaded background; a caption either describes it ("a photo of a
red circle"), describes another image (mismatched), is in another language, or is too short. Floods of
near-copies of a few stock images, reposted under other listings' captions, eat the training budget and
teach wrong pairs; blank and noise images carry random captions. Some URLs
are dead, some files corrupt or truncated, some URLs use schemes we must never fetch. The metadata's
CLIP-like scores follow whether the caption matches (the full demo computes its own with a trained model).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from curate.demo.metadata import random_uids

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (235, 215, 40),
          "purple": (140, 50, 180), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle", "cross", "ring")
FOREIGN = ("une photo d'un {shape} {color}", "ein Foto von einem {color} {shape}", "una foto de un {shape} {color}")
SHORT = ("img", "DSC_0042", "photo")


@dataclass
class WorldSample:
    uid: str
    kind: str  # ok | mismatched | foreign | short | dead | corrupt | truncated | scheme | redirect | tiny | wide
    color: str
    shape: str


def _backdrop(base: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A base colour with soft random shading, as photos have: without it, two different flat drawings of
    similar layout share a perceptual hash and pHash dedup would merge distinct images."""
    shade = rng.normal(0.0, 28.0, (4, 4, 3))
    field = np.clip(base + shade, 0, 255).astype(np.uint8)
    return Image.fromarray(field, "RGB").resize(size, Image.Resampling.BICUBIC)


def draw(color: str, shape: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    bg = rng.integers(60, 200, 3) if rng.random() < 0.5 else np.full(3, 128)
    img = _backdrop(bg, (w, h), rng)
    d = ImageDraw.Draw(img)
    s = min(w, h)
    cx, cy = w // 2 + int(rng.integers(-s // 8, s // 8 + 1)), h // 2 + int(rng.integers(-s // 8, s // 8 + 1))
    r = int(s * rng.uniform(0.25, 0.4))
    fill = COLORS[color]
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "cross":
        t = max(2, r // 3)
        d.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        d.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    else:
        d.ellipse(box, outline=fill, width=max(2, r // 3))
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


KIND_P = {"ok": 0.30, "mismatched": 0.33, "flood": 0.15, "blank": 0.05, "foreign": 0.04, "short": 0.02,
          "dead": 0.03, "corrupt": 0.02, "truncated": 0.01, "scheme": 0.02, "redirect": 0.01, "tiny": 0.01,
          "wide": 0.01}
FLOOD_SOURCES = 4  # a flood is many near-copies of one of this many images


def near_copy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A repost of the same picture: rescaled by a few percent, slightly brighter or darker (then re-encoded
    by the caller). Its bytes differ from every other copy; its perceptual hash stays within a few bits."""
    w, h = img.size
    f = rng.uniform(0.9, 1.1)
    img = img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BILINEAR)
    gain = rng.uniform(0.93, 1.07)
    return img.point(lambda v: min(255, int(v * gain)))


def blank(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A flat grey or a noise image: nothing a caption could describe."""
    w, h = size
    if rng.random() < 0.5:
        return Image.new("RGB", (w, h), (int(rng.integers(100, 160)),) * 3)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def build_world(web_dir: str | Path, n: int, seed: int, url_for, kind_p: dict[str, float] | None = None) -> pa.Table:
    """Write the images under `web_dir` and return the URL list (DataComp schema plus the demo's scores).

    `url_for(name)` gives the served URL of a file in `web_dir`.
    """
    web_dir = Path(web_dir)
    web_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    uids = random_uids(rng, n)
    kind_p = kind_p or KIND_P
    kinds = rng.choice(list(kind_p), size=n, p=np.array(list(kind_p.values())) / sum(kind_p.values()))
    rows = {k: [] for k in ("uid", "url", "text", "original_width", "original_height", "clip_b32_similarity_score",
                            "clip_l14_similarity_score", "demo_kind")}
    color_names = list(COLORS)
    flood_rng = np.random.default_rng(seed + 7919)
    floods = [(color_names[flood_rng.integers(len(color_names))], SHAPES[flood_rng.integers(len(SHAPES))],
               (int(flood_rng.integers(150, 320)), int(flood_rng.integers(150, 320))), int(flood_rng.integers(1 << 30)))
              for _ in range(FLOOD_SOURCES)]
    for uid, kind in zip(uids, kinds):
        color, shape = color_names[rng.integers(len(color_names))], SHAPES[rng.integers(len(SHAPES))]
        size = (int(rng.integers(120, 360)), int(rng.integers(120, 360)))
        if kind == "flood":  # a stock image reposted under other listings' captions
            color, shape, size, flood_seed = floods[rng.integers(FLOOD_SOURCES)]
            caption_of = (color_names[rng.integers(len(color_names))], SHAPES[rng.integers(len(SHAPES))])
        if kind == "tiny":
            size = (12, 12)
        elif kind == "wide":
            size = (400, 24)
        name = f"{uid}.jpg"
        url = url_for(name)
        caption = f"a photo of a {color} {shape}"
        if kind == "flood":
            caption = f"a photo of a {caption_of[0]} {caption_of[1]}"
        matched = kind != "mismatched" and (kind != "flood" or caption_of == (color, shape))
        if kind == "mismatched":
            other = (color_names[(color_names.index(color) + 1 + rng.integers(len(color_names) - 1)) % len(color_names)],
                     SHAPES[(SHAPES.index(shape) + 1 + rng.integers(len(SHAPES) - 1)) % len(SHAPES)])
            caption = f"a photo of a {other[0]} {other[1]}"
        elif kind == "foreign":
            caption = FOREIGN[rng.integers(len(FOREIGN))].format(color=color, shape=shape)
        elif kind == "short":
            caption = SHORT[rng.integers(len(SHORT))]
        if kind == "flood":
            img = near_copy(draw(color, shape, size, np.random.default_rng(flood_seed)), rng)
            data = jpeg(img, quality=int(rng.integers(70, 96)))
        elif kind == "blank":
            img = blank(size, rng)
            data = jpeg(img)
        else:
            img = draw(color, shape, size, rng)
            data = jpeg(img)
        if kind == "corrupt":
            data = rng.bytes(len(data))
        elif kind == "truncated":
            data = data[: len(data) // 3]
        if kind == "dead":
            pass  # never written: the server answers 404
        else:
            (web_dir / name).write_bytes(data)
        if kind == "scheme":
            url = ["file:///etc/passwd", f"ftp://127.0.0.1/{name}", f"gopher://127.0.0.1/{name}"][rng.integers(3)]
        elif kind == "redirect":
            url = url_for("").rsplit("/img/", 1)[0] + "/redirect/file//etc/passwd"  # 302 to file:///etc/passwd
        base = 0.31 if matched and kind not in ("short", "blank") else 0.17
        b32 = float(rng.normal(base, 0.025))
        rows["uid"].append(uid)
        rows["url"].append(url)
        rows["text"].append(caption)
        rows["original_width"].append(size[0])
        rows["original_height"].append(size[1])
        rows["clip_b32_similarity_score"].append(b32)
        rows["clip_l14_similarity_score"].append(float(b32 * 0.95 + rng.normal(0, 0.01)))
        rows["demo_kind"].append(str(kind))
    table = pa.table(rows)
    for col in ("clip_b32_similarity_score", "clip_l14_similarity_score"):
        table = table.set_column(table.column_names.index(col), col, table.column(col).cast(pa.float32()))
    return table


def write_clean_set(out_dir: str | Path, n: int, seed: int, shard_size: int = 500) -> int:
    """A separate, clean image-text set (matching captions only) as webdataset shards, for training the
    demo's scoring CLIP, as Data Filtering Networks train their filter on curated data."""
    import json

    from curate.atomic import atomic_path
    from curate.wds import TarSampleWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    uids = random_uids(rng, n)
    color_names = list(COLORS)
    for start in range(0, n, shard_size):
        with atomic_path(out_dir / f"{start // shard_size:08d}.tar") as tmp, open(tmp, "wb") as f:
            writer = TarSampleWriter(f)
            for uid in uids[start:start + shard_size]:
                color, shape = color_names[rng.integers(len(color_names))], SHAPES[rng.integers(len(SHAPES))]
                size = (int(rng.integers(120, 360)), int(rng.integers(120, 360)))
                writer.write(uid, {"jpg": jpeg(draw(color, shape, size, rng)), "txt": f"a photo of a {color} {shape}".encode(),
                                   "json": json.dumps({"uid": uid}).encode()})
            writer.close()
    return n
