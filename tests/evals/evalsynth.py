"""Synthetic eval sets in DataComp's webdataset layout, and a random-init tiny CLIP saved to disk.

Shared by the tests and benchmarks/eval_bench.py; nothing here downloads anything.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "evals" / "models" / "evals-tiny-ViT.json"
TINY_ARCH = TINY_CONFIG.stem


def _image_bytes(rng: np.random.Generator, fmt: str, size=(40, 36)) -> bytes:
    # a coloured gradient plus noise: different images give clearly different features even at random init
    w, h = size
    base = rng.integers(0, 256, 3)
    grad = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, 3)
    noise = rng.normal(0, 40, (h, w, 3))
    arr = np.clip(base + grad + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _write_shards(root: Path, samples: list[dict], n_shards: int) -> None:
    (root / "test").mkdir(parents=True, exist_ok=True)
    per = -(-len(samples) // n_shards)
    for i in range(n_shards):
        with tarfile.open(root / "test" / f"{i}.tar", "w") as tf:
            for s in samples[i * per:(i + 1) * per]:
                for ext, data in s.items():
                    if ext != "__key__":
                        _add(tf, f"{s['__key__']}.{ext}", data)
    (root / "test" / "nshards.txt").write_text(f"{n_shards}\n")


def make_classification_set(root: Path, n_classes=7, n_images=60, n_templates=4, n_shards=2, seed=0,
                            size=(40, 36), names=None, metadata_ranges=None) -> Path:
    """`metadata_ranges`: per-field value counts; each sample then gets a `.npy` int vector (WILDS/fairness sets)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = names or [f"object {w}" for w in ["apple", "boat", "cat", "dog", "engine", "fern", "goat",
                                              "house", "iris", "jar", "kite", "lamp"][:n_classes]]
    assert len(names) == n_classes
    (root / "classnames.txt").write_text("\n".join(names) + "\n")
    templates = ["a photo of a {c}.", "a blurry photo of the {c}.", "art of the {c}.", "a {c} in the wild.",
                 "a close-up photo of my {c}.", "itap of a {c}."][:n_templates]
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    samples = []
    for i in range(n_images):
        fmt = ["png", "jpeg", "webp"][i % 3]
        ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[fmt]
        samples.append({"__key__": f"s{i:07d}", ext: _image_bytes(rng, fmt.upper(), size),
                        "cls": str(int(rng.integers(0, n_classes))).encode()})
        if metadata_ranges:
            buf = io.BytesIO()
            np.save(buf, np.array([rng.integers(0, r) for r in metadata_ranges], dtype=np.int64))
            samples[-1]["npy"] = buf.getvalue()
    _write_shards(root, samples, n_shards)
    return root


def make_retrieval_set(root: Path, n_images=24, seed=1, n_shards=1, size=(40, 36)) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_type.txt").write_text("retrieval\n")
    words = ["red", "green", "small", "large", "dog", "car", "tree", "river", "on", "a", "the", "near", "old", "shiny"]
    samples = []
    for i in range(n_images):
        n_caps = int(rng.integers(2, 6))
        caps = [" ".join(rng.choice(words, int(rng.integers(3, 9)))) for _ in range(n_caps)]
        samples.append({"__key__": f"r{i:07d}", "jpg": _image_bytes(rng, "JPEG", size),
                        "txt": "\n".join(caps).encode()})
    _write_shards(root, samples, n_shards)
    return root


def make_tiny_checkpoint(path: Path, seed=0, wrap=True) -> Path:
    """Random-init tiny CLIP saved like open_clip's trainer saves (a dict with 'state_dict', 'module.' keys)."""
    import open_clip
    import torch

    open_clip.add_model_config(TINY_CONFIG)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_ARCH)
    sd = model.state_dict()
    obj = {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}} if wrap else sd
    torch.save(obj, path)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """Rows as one parquet file, images as `datasets`' Image cells ({"bytes", "path"}), like the hub's
    parquet conversion (revision refs/convert/parquet) of an nlphuji dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def retrieval_rows(n_images=10, seed=2, size=(40, 36)) -> list[dict]:
    """nlphuji/flickr30k-like rows: `image` and a list of captions (one with a stray newline)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        caps = [f"caption {j} of image {i}" for j in range(int(rng.integers(1, 6)))]
        if i == 0:
            caps[0] = "a caption\nwith a newline"
        fmt, ext = [("JPEG", "jpg"), ("PNG", "png")][i % 2]
        rows.append({"image": {"bytes": _image_bytes(rng, fmt, size), "path": f"{i}.{ext}"}, "caption": caps,
                     "img_id": str(i)})
    return rows


CUES = ["Apple", "ocean", "dog", "Ice", "tree", "umbrella", "sun", "engine", "bark", "night"]


def winogavil_rows(sizes=(5, 6, 10, 12, 5, 10, 12, 6, 10, 12), seed=4, size=(40, 36)) -> list[dict]:
    """nlphuji/winogavil-like rows: a cue, candidate names, the associated ones, and one image per candidate."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(sizes):
        cands = [f"cand{i}_{j}" for j in range(n)]
        k = int(rng.integers(1, min(5, n - 1)))
        assoc = sorted(rng.choice(cands, k, replace=False).tolist())
        imgs = [{"bytes": _image_bytes(rng, ["JPEG", "PNG", "WEBP"][j % 3], size), "path": None} for j in range(n)]
        rows.append({"cue": CUES[i % len(CUES)], "candidates": cands, "associations": assoc,
                     "candidate_images": imgs, "num_associations": k})
    return rows


def make_datacomp_suite(root: Path, n_images=4, n_classes=3, seed=0, tasks=None) -> list[str]:
    """Every scored task of DataComp's list (configs/evals/datacomp.yaml, 38) as a tiny set under `root`, in the
    folder the task list names; returns their keys. Few images each, so a model can run the whole suite quickly.

    Classification sets get `n_classes` classes and one template; WILDS and fairness sets also a `.npy` metadata
    vector with the fields evals.groups names; WinoGAViL is written by `evaluate download`'s own converter from
    nlphuji-like parquet rows, one instance of 5 candidates and one of 10, so that the main metric's group (10-12
    candidates) is not empty. FairFace and UTKFace (run by DataComp, not scored) are left out.
    """
    from evals.download import convert_winogavil
    from evals.groups import METADATA_FIELDS
    from evals.tasks import load_tasks

    root = Path(root)
    keys = []
    for i, task in enumerate(t for t in (tasks or load_tasks()) if t.scored):
        dest, s = task.path(root), seed + i
        if task.type == "retrieval":
            make_retrieval_set(dest, n_images=n_images, seed=s)
        elif task.type == "winogavil":
            with tempfile.TemporaryDirectory() as raw:
                write_parquet(Path(raw) / "test" / "0000.parquet", winogavil_rows(sizes=(5, 10), seed=s))
                convert_winogavil(Path(raw), dest)
        else:
            fields = METADATA_FIELDS.get(task.key)
            make_classification_set(dest, n_classes=n_classes, n_images=n_images, n_templates=1, n_shards=1, seed=s,
                                    metadata_ranges=[2] * len(fields) if fields else None)
        keys.append(task.key)
    return keys
