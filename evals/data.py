"""Reader for DataComp's / CLIP_benchmark's webdataset evaluation sets.

Layout of one task folder (see DESIGN.md):

    classnames.txt                         one class name per line (classification)
    zeroshot_classification_templates.txt  one template per line, `{c}` marks the class name
    dataset_type.txt                       optional; "retrieval" for image-text sets, "winogavil" for WinoGAViL
    test/nshards.txt                       number of shards
    test/{i}.tar                           {key}.webp|png|jpg|jpeg + {key}.cls (class id) or {key}.txt (captions, one per line)
                                           WinoGAViL: {key}.json (cue, candidates, associations) + {key}.{j:02d}.{ext}

Read with `tarfile` rather than webdataset so that every bad input fails early with the file named,
and so that DataLoader workers can split one shard by sample (most eval sets have a single shard).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from curate.signals.decode import PIXELS_ONLY
from curate.signals.decode import decode_image as decode
from curate.wds import member_key

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's preference order


class EvalDataError(ValueError):
    """An eval set that is missing a file or holds a malformed one."""


@dataclass
class EvalSet:
    root: Path
    dataset_type: str  # classification | retrieval | winogavil | multilabel
    shards: list[Path]
    classnames: list[str] | None = None
    templates: list[str] | None = None
    extra: dict = field(default_factory=dict)


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f.read().splitlines()]


def shard_paths(root: Path, split: str = "test") -> list[Path]:
    """The shard list named by `{split}/nshards.txt`; each shard must exist and hold at least one sample."""
    nfile = root / split / "nshards.txt"
    if not nfile.is_file():
        raise EvalDataError(f"missing {nfile} (expected the number of shards of {root.name})")
    try:
        n = int(nfile.read_text().strip())
    except ValueError:
        raise EvalDataError(f"{nfile} does not hold an integer") from None
    if n <= 0:
        raise EvalDataError(f"{nfile} says {n} shards")
    shards = [root / split / f"{i}.tar" for i in range(n)]
    for s in shards:
        if not s.is_file():
            raise EvalDataError(f"missing shard {s} ({nfile} says {n})")
        try:
            with tarfile.open(s) as tf:
                first = tf.next()
        except tarfile.TarError as e:
            raise EvalDataError(f"unreadable shard {s}: {e}") from None
        if first is None:
            raise EvalDataError(f"empty shard {s}: no samples")
    return shards


def open_eval_set(root: str | os.PathLike, kind: str = "classification", split: str = "test") -> EvalSet:
    """Open one task folder; `kind` is the task type from the task list (classification needs names and templates)."""
    root = Path(root)
    if not root.is_dir():
        raise EvalDataError(f"eval set folder not found: {root}")
    type_file = root / "dataset_type.txt"
    dataset_type = type_file.read_text().strip().lower() if type_file.is_file() else "classification"
    if kind in ("retrieval", "winogavil"):
        dataset_type = kind
    shards = shard_paths(root, split)
    es = EvalSet(root=root, dataset_type=dataset_type, shards=shards)
    if dataset_type not in ("retrieval", "winogavil"):
        cfile, tfile = root / "classnames.txt", root / "zeroshot_classification_templates.txt"
        if not cfile.is_file():
            raise EvalDataError(f"missing {cfile} (zero-shot classification needs the class names)")
        if not tfile.is_file():
            raise EvalDataError(f"missing {tfile} (zero-shot classification needs the prompt templates)")
        es.classnames = _read_lines(cfile)
        es.templates = [t for t in _read_lines(tfile) if t]
        if not es.classnames:
            raise EvalDataError(f"{cfile} is empty")
        if not es.templates:
            raise EvalDataError(f"{tfile} is empty")
    return es


def iter_tar_samples(path: Path, keep: Callable[[int], bool] = lambda i: True) -> Iterator[dict]:
    """Group a tar's members into samples by key (webdataset's rule: name up to the first dot of the basename).

    Only members of kept samples are read, so workers that skip samples only pay for tar headers.
    """
    with tarfile.open(path) as tf:
        cur_key, cur, idx = None, None, -1
        for m in tf:
            if not m.isfile():
                continue
            named = member_key(m.name)
            if named is None:
                continue
            key, ext = named
            if key != cur_key:
                if cur is not None:
                    yield cur
                idx += 1
                cur_key = key
                cur = {"__key__": key, "__index__": idx} if keep(idx) else None
            if cur is not None:
                cur[ext] = tf.extractfile(m).read()
        if cur is not None:
            yield cur


def decode_image(sample: dict, shard: Path) -> Image.Image:
    """The sample's RGB image; an undecodable or oversized one (pixels bounded on the header, before decoding)
    is a clear error: skipping it would change the task's score."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return rgb_image(sample[ext], f"{shard}: sample {sample['__key__']}")
    raise EvalDataError(f"{shard}: sample {sample['__key__']} has no image ({'/'.join(IMAGE_EXTS)})")


def rgb_image(data: bytes, where: str) -> Image.Image:
    """Untrusted image bytes as RGB through the curation decoder, or EvalDataError naming `where`."""
    decoded = decode(data, PIXELS_ONLY, forms=("RGB",))
    if not decoded.ok:
        raise EvalDataError(f"{where}: its image cannot be used ({decoded.status})")
    return decoded.rgb


def decode_field(sample: dict, name: str, shard: Path):
    if name not in sample:
        raise EvalDataError(f"{shard}: sample {sample['__key__']} has no .{name}")
    raw = sample[name]
    if name == "cls":
        return int(raw.decode().strip())
    if name == "txt":
        return raw.decode("utf-8").splitlines()
    if name == "npy":
        return np.load(io.BytesIO(raw), allow_pickle=False)
    if name == "json":
        return json.loads(raw)
    return raw


class EvalDataset(torch.utils.data.IterableDataset):
    """(image tensor, *fields) per sample; samples are dealt round-robin to DataLoader workers."""

    def __init__(self, shards: list[Path], transform, fields: tuple[str, ...] = ("cls",)):
        self.shards, self.transform, self.fields = list(shards), transform, tuple(fields)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for si, shard in enumerate(self.shards):
            # offset by shard index so that small shards do not all load worker 0
            for s in iter_tar_samples(shard, keep=lambda i, si=si: (si + i) % nw == wid):
                img = self.transform(decode_image(s, shard))
                yield (img, *(decode_field(s, f, shard) for f in self.fields))


def collate(batch):
    """Stack images (and numeric fields); keep caption lists as lists."""
    cols = list(zip(*batch))
    out = [torch.stack(cols[0])]
    for col in cols[1:]:
        if isinstance(col[0], int):
            out.append(torch.tensor(col, dtype=torch.long))
        elif isinstance(col[0], np.ndarray):
            out.append(torch.from_numpy(np.stack(col)))
        else:
            out.append(list(col))
    return out


def make_loader(dataset: EvalDataset, batch_size: int, workers: int):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                                       persistent_workers=False, worker_init_fn=_one_thread if workers else None)


def _one_thread(_):
    # decoding workers each get one core; the main process keeps the rest for the model
    torch.set_num_threads(1)
