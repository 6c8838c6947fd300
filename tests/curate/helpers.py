"""Small pools made by the tests: DataComp metadata and img2dataset-style shards, written here."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate.demo.metadata import generate_metadata


def write_metadata_pool(root: Path, rows_per_part: list[int], seed: int = 0, subdir: str | None = "metadata") -> list[Path]:
    d = root / subdir if subdir else root
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, n in enumerate(rows_per_part):
        p = d / f"{i:08d}.parquet"
        pq.write_table(generate_metadata(n, seed=seed * 1000 + i), p)
        paths.append(p)
    return paths


def jpeg_bytes(seed: int, size=(24, 24)) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard_pool(root: Path, per_shard: list[int], seed: int = 0, failed_per_shard: int = 1) -> pa.Table:
    """Metadata for every row, and img2dataset-like shards holding the successful ones.

    Each shard also records `failed_per_shard` rows as failed downloads (in metadata, not in the tar).
    Returns the metadata table.
    """
    total = sum(per_shard) + failed_per_shard * len(per_shard)
    meta = generate_metadata(total, seed=seed)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pq.write_table(meta, root / "metadata" / "00000000.parquet")
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    uids = meta.column("uid").to_pylist()
    texts = meta.column("text").to_pylist()
    row = 0
    for sid, n in enumerate(per_shard):
        rec = {"uid": [], "status": [], "caption": [], "key": []}
        with tarfile.open(shards / f"{sid:08d}.tar", "w") as tar:
            for j in range(n):
                key = f"{sid:08d}{j:04d}"
                uid = uids[row]
                add_member(tar, f"{key}.jpg", jpeg_bytes(row))
                add_member(tar, f"{key}.txt", (texts[row] or "").encode())
                add_member(tar, f"{key}.json", json.dumps({"uid": uid, "key": key, "caption": texts[row]}).encode())
                for k, v in (("uid", uid), ("status", "success"), ("caption", texts[row]), ("key", key)):
                    rec[k].append(v)
                row += 1
        for j in range(failed_per_shard):
            for k, v in (("uid", uids[row]), ("status", "failed_to_download"), ("caption", texts[row]), ("key", None)):
                rec[k].append(v)
            row += 1
        pq.write_table(pa.table(rec), shards / f"{sid:08d}.parquet")
        (shards / f"{sid:08d}_stats.json").write_text(json.dumps({"count": n + failed_per_shard, "successes": n}))
    return meta


def tar_samples(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for each sample of a tar, in order."""
    out: list[tuple[str, dict[str, bytes]]] = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            data = tar.extractfile(m).read()
            if not out or out[-1][0] != key:
                out.append((key, {}))
            out[-1][1][ext] = data
    return out


def java_available() -> bool:
    if not shutil.which("java"):
        return False
    out = subprocess.run(["java", "-version"], capture_output=True, text=True)
    return out.returncode == 0


def tiny_clip_checkpoint(path: Path, seed: int = 0) -> Path:
    """A datacomp-tiny open_clip checkpoint with random weights in open_clip's layout, made here (no download)."""
    import open_clip
    import torch

    from curate.signals.clip import register_configs

    register_configs()
    torch.manual_seed(seed)
    torch.save({"state_dict": open_clip.create_model("datacomp-tiny").state_dict()}, path)
    return path
