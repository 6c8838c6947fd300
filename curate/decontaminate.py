"""`curate decontaminate`: find pool images that are (near) copies of evaluation images.

Every image of every eval set under EVALS (DataComp's layout: `wds_<task>_test/test/nshards.txt` and
`test/{i}.tar`) is pHashed exactly as the pool was (curate.signals.phash); each pool pHash within
`max_distance` bits of an eval pHash is a match (an exact cross join, curate.dedup.hamming.cross_pairs).
With `--eval-embeddings` (an .npz of eval image embeddings from the same CLIP model as the pool's) the
pool's embeddings are also compared by cosine, and cosine >= min_cosine is a match too.

Writes `POOL/columns/decontam/<file>.parquet` (`uid`, `contaminated`: null where the sample has no
pHash, so it could not be checked) and `POOL/decontamination_report.parquet` with one row per match:
pool uid, eval set, eval shard, eval key, method (phash | cosine), distance (bits) and cosine.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.atomic import atomic_path, write_json
from curate.dedup.hamming import cross_pairs, parse_hex64
from curate.dedup.run import DedupError, read_store_signal
from curate.wds import member_key

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")


class EvalReadError(ValueError):
    """An eval folder that is not in the expected layout."""


def eval_sets(eval_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """(name, folder) of each eval set: `wds_<name>_test` folders (or any folder with test/nshards.txt)."""
    root = Path(eval_dir)
    if not root.is_dir():
        raise EvalReadError(f"eval folder not found: {root}")
    found = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "test" / "nshards.txt").is_file():
            name = d.name
            if name.startswith("wds_") and name.endswith("_test"):
                name = name[4:-5]
            found.append((name, d))
    if not found:
        raise EvalReadError(f"{root}: no eval sets (expected wds_<task>_test/test/nshards.txt folders)")
    return found


def iter_eval_images(folder: Path):
    """(shard index, key, image bytes) of each sample with an image, in shard order."""
    nfile = folder / "test" / "nshards.txt"
    try:
        n = int(nfile.read_text().strip())
    except ValueError:
        raise EvalReadError(f"{nfile} does not hold an integer") from None
    for si in range(n):
        path = folder / "test" / f"{si}.tar"
        if not path.is_file():
            raise EvalReadError(f"missing shard {path} ({nfile} says {n})")
        samples: dict[str, dict[str, bytes]] = {}
        order: list[str] = []
        with tarfile.open(path) as tf:
            for m in tf:
                if not m.isfile():
                    continue
                named = member_key(m.name)
                if named is None or named[1] not in IMAGE_EXTS:
                    continue
                key, ext = named
                if key not in samples:
                    samples[key] = {}
                    order.append(key)
                samples[key][ext] = tf.extractfile(m).read()
        for key in order:
            files = samples[key]
            yield si, key, next(files[e] for e in IMAGE_EXTS if e in files)


def hash_eval_sets(eval_dir: str | os.PathLike) -> tuple[pa.Table, dict]:
    """One row per eval image: eval_set, eval_shard, eval_key, phash (uint64 as int64 bits), ok."""
    from curate.signals.decode import decode_image
    from curate.signals.phash import hash_pixels
    from curate.signals.resize import resize32

    sets, shards, keys, hashes = [], [], [], []
    failed: dict[str, int] = {}
    for name, folder in eval_sets(eval_dir):
        batch = []
        for si, key, data in iter_eval_images(folder):
            dec = decode_image(data, forms=("L",))
            if not dec.ok:
                failed[name] = failed.get(name, 0) + 1
                continue
            batch.append(resize32(np.asarray(dec.luminance)))
            sets.append(name)
            shards.append(si)
            keys.append(key)
        if batch:
            hashes.append(hash_pixels(np.stack(batch)))
    values = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    table = pa.table({"eval_set": pa.array(sets, pa.string()), "eval_shard": pa.array(shards, pa.int32()),
                      "eval_key": pa.array(keys, pa.string()), "phash": pa.array(values.view(np.int64), pa.int64())})
    return table, {"eval_images": len(values), "eval_images_failed": failed}


def _cosine_matches(pool_root: Path, uids: pa.ChunkedArray, eval_embeddings: str, arch: str, min_cosine: float):
    """(pool row, eval row, cosine) for pool embeddings with cosine >= min_cosine to an eval embedding."""
    import faiss

    from curate.columns import embeddings_to_numpy, read_columns
    from curate.dedup.run import EMBEDDING_COLUMNS
    from curate.pool import Pool

    col = EMBEDDING_COLUMNS[arch]
    with np.load(eval_embeddings, allow_pickle=False) as z:
        if "embeddings" not in z.files or "eval_set" not in z.files or "eval_key" not in z.files:
            raise DedupError(f"{eval_embeddings}: expected arrays embeddings, eval_set, eval_key")
        q = np.asarray(z["embeddings"], np.float32)
        q_set, q_key = z["eval_set"].astype(str), z["eval_key"].astype(str)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    tables = [read_columns(pool_root, p.path, ["uid", col]) for p in Pool(pool_root).partitions()]
    t = pa.concat_tables(tables)
    c = t.column(col)
    ok = np.asarray(c.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    emb = embeddings_to_numpy(c.filter(pa.array(ok))).astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    lims, sims, ids = index.range_search(q, float(min_cosine) - 1e-6)
    keep = sims >= min_cosine
    qrow = np.repeat(np.arange(len(q)), np.diff(lims.astype(np.int64)))[keep]
    pool_uid = t.column("uid").filter(pa.array(ok)).take(pa.array(ids[keep]))
    rows_in_store = pc.index_in(pool_uid, value_set=uids)
    return rows_in_store, pool_uid, q_set[qrow], q_key[qrow], sims[keep]


def run_decontaminate(pool_root: str | os.PathLike, eval_dir: str | os.PathLike, *, max_distance: int = 4,
                      min_cosine: float | None = None, eval_embeddings: str | None = None, arch: str = "l14") -> dict:
    pool_root = Path(pool_root)
    start = time.perf_counter()
    rows = read_store_signal(pool_root, "phash")
    pool_values, valid = parse_hex64(rows.value)
    present = np.asarray(pc.is_valid(rows.value).to_numpy(zero_copy_only=False), dtype=bool)
    evals, estats = hash_eval_sets(eval_dir)
    eval_values = evals.column("phash").to_numpy().view(np.uint64)
    index = np.flatnonzero(valid)
    qi, bj, dist = cross_pairs(eval_values, pool_values[index], max_distance)
    pool_row = index[bj]
    contaminated = np.zeros(len(valid), bool)
    contaminated[pool_row] = True
    report = {
        "pool_uid": rows.uid.take(pa.array(pool_row)),
        "eval_set": evals.column("eval_set").take(pa.array(qi)),
        "eval_shard": evals.column("eval_shard").take(pa.array(qi)),
        "eval_key": evals.column("eval_key").take(pa.array(qi)),
        "method": pa.array(["phash"] * len(qi), pa.string()),
        "distance": pa.array(dist.astype(np.int32), pa.int32()),
        "cosine": pa.nulls(len(qi), pa.float32()),
    }
    report_table = pa.table(report)
    cosine_matches = 0
    if eval_embeddings:
        if min_cosine is None:
            raise DedupError("--eval-embeddings needs --min-cosine")
        rows_in_store, puid, qset, qkey, sims = _cosine_matches(pool_root, rows.uid, eval_embeddings, arch, min_cosine)
        r = np.asarray(pc.fill_null(rows_in_store, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        contaminated[r[r >= 0]] = True
        cosine_matches = len(sims)
        report_table = pa.concat_tables([report_table, pa.table({
            "pool_uid": puid.cast(pa.string()), "eval_set": pa.array(qset, pa.string()),
            "eval_shard": pa.nulls(len(sims), pa.int32()), "eval_key": pa.array(qkey, pa.string()),
            "method": pa.array(["cosine"] * len(sims), pa.string()), "distance": pa.nulls(len(sims), pa.int32()),
            "cosine": pa.array(sims.astype(np.float32), pa.float32())})])
    # the column files: null where there was no usable pHash to check
    target = pool_root / "columns" / "decontam"
    staging = pool_root / ".decontam.staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    s = 0
    for name, size in zip(rows.names, rows.sizes):
        checked = valid[s:s + size] | contaminated[s:s + size]
        pq.write_table(pa.table({"uid": rows.uid.slice(s, size),
                                 "contaminated": pa.array(contaminated[s:s + size], pa.bool_(), mask=~checked)}),
                       staging / f"{name}.parquet")
        s += size
    old = pool_root / ".decontam.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)
    with atomic_path(pool_root / "decontamination_report.parquet") as tmp:
        pq.write_table(report_table, tmp)
    per_set = {}
    for name in evals.column("eval_set").unique().to_pylist():
        sel = pc.equal(report_table.column("eval_set"), name)
        per_set[name] = {"matches": int(pc.sum(sel).as_py() or 0),
                         "pool_samples": len(pc.unique(report_table.column("pool_uid").filter(sel)))}
    stats = {
        "pool": str(pool_root), "eval_dir": str(eval_dir), "max_distance": max_distance, "min_cosine": min_cosine,
        **estats,
        "pool_rows": int(len(valid)), "pool_rows_checked": int(valid.sum()),
        "pool_rows_without_phash": int((~present).sum()), "pool_rows_malformed_phash": int((present & ~valid).sum()),
        "phash_matches": int(len(qi)), "cosine_matches": int(cosine_matches),
        "contaminated": int(contaminated.sum()), "per_eval_set": per_set,
        "report": str(pool_root / "decontamination_report.parquet"), "seconds": round(time.perf_counter() - start, 3),
    }
    write_json(pool_root / "columns" / "decontam_stats.json", stats)
    return stats


__all__ = ["EvalReadError", "eval_sets", "hash_eval_sets", "iter_eval_images", "run_decontaminate"]
