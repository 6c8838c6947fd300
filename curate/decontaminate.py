"""`curate decontaminate`: find pool images that are (near) copies of evaluation images.

Every image of every eval set under EVALS (DataComp's layout: `wds_<task>_test/test/nshards.txt` and
`test/{i}.tar`) is pHashed exactly as the pool was (curate.signals.phash); each pool pHash within
`max_distance` bits of an eval pHash is a match (an exact cross join, curate.dedup.hamming.cross_pairs).
With `--eval-embeddings` (an .npz of eval image embeddings from the same CLIP model as the pool's) the
pool's embeddings are also compared by cosine, and cosine >= min_cosine is a match too.

The eval side is small (hashes of the eval images, their embeddings) and is computed in the driver; the
pool side is not: each pool phash column file (and, for cosine, each pool partition) is one task, run in
this process on the local engine and on the workers with `--engine dask|spark`, the eval side sent to
each worker once (a broadcast). A phash task writes its own piece of the column; the driver gathers only
counts and the matches (few), and orders them (by eval row, then pool row) so every engine writes the
same report.

Writes `POOL/columns/decontam/<file>.parquet` (`uid`, `contaminated`: null where the sample has no
pHash, so it could not be checked) and `POOL/decontamination_report.parquet` with one row per match:
pool uid, eval set, eval shard, eval key, method (phash | cosine), distance (bits) and cosine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import atomic_path, replace_folder, write_json
from curate.dedup.frames import list_files
from curate.dedup.hamming import cross_pairs, parse_hex64
from curate.dedup.names import DedupError, embedding_column
from curate.dedup.semantic import BLOCK_VALUES
from curate.wds import ReadReport, iter_samples

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")


class EvalReadError(ValueError):
    """An eval folder that is not in the expected layout."""


def eval_sets(eval_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """(name, folder) of each eval set: `wds_<name>_test` folders (or any folder with test/nshards.txt).
    `eval_dir` may be an object-store URL (`s3://bucket/evals`): the folders are then prefixes there."""
    root = storage.path(eval_dir)
    if not root.is_dir():
        raise EvalReadError(f"eval folder not found: {root}")
    found = []
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        if (d / "test" / "nshards.txt").is_file():
            name = d.name
            if name.startswith("wds_") and name.endswith("_test"):
                name = name[4:-5]
            found.append((name, d))
    if not found:
        raise EvalReadError(f"{root}: no eval sets (expected wds_<task>_test/test/nshards.txt folders)")
    return found


def iter_eval_images(folder: Path):
    """(shard index, key, image bytes) of each sample with an image, in shard order. Each tar is read once, as a
    stream, by the pool's own reader (curate.wds: member names are untrusted, only a plain key.ext is taken,
    and a cut or unreadable tar is an error, never a short eval set)."""
    nfile = folder / "test" / "nshards.txt"
    try:
        n = int(nfile.read_text().strip())
    except ValueError:
        raise EvalReadError(f"{nfile} does not hold an integer") from None
    for si in range(n):
        path = folder / "test" / f"{si}.tar"
        if not path.is_file():
            raise EvalReadError(f"missing shard {path} ({nfile} says {n})")
        report = ReadReport()
        for sample in iter_samples(str(path), report):
            image = next((e for e in IMAGE_EXTS if e in sample.files), None)
            if image is not None:
                yield si, sample.key, sample.files[image]
        if report.error:
            raise EvalReadError(f"{path}: not a readable tar ({report.error})")


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


# --- per-task steps (one pool partition or phash column file each; the eval side is `shared`) -----------------


def read_eval_embeddings(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit float64 rows, eval_set, eval_key) of an --eval-embeddings npz (a local file or an object)."""
    if not (storage.path(path).is_file()):
        raise DedupError(f"--eval-embeddings {path}: file not found")
    with storage.open_file(path) as raw, np.load(raw, allow_pickle=False) as z:
        if "embeddings" not in z.files or "eval_set" not in z.files or "eval_key" not in z.files:
            raise DedupError(f"{path}: expected arrays embeddings, eval_set, eval_key")
        q = np.asarray(z["embeddings"], np.float32)
        q_set, q_key = z["eval_set"].astype(str), z["eval_key"].astype(str)
    if q.ndim != 2 or not (len(q) == len(q_set) == len(q_key)):
        raise DedupError(f"{path}: embeddings must be (N, D) with N eval_set and eval_key entries")
    q = q.astype(np.float64)
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12), q_set, q_key


def cosine_matches(task: tuple[str, str, str, int], shared: tuple[np.ndarray, float]) -> dict:
    """One pool partition against the eval embeddings: (part, row in part, eval row, uid, cosine) with
    cosine >= min_cosine. Products are float64 of float32 rows, as in curate.dedup.semantic: the reported
    cosine (rounded to float32) does not change with the BLAS thread count of the process that ran the task
    (in float32 it did, in the last bit)."""
    from curate.columns import MissingColumnError, embeddings_to_numpy, read_columns
    from curate.pool import PoolError

    pool_root, path, col, part = task
    q, min_cosine = shared
    try:
        t = read_columns(pool_root, path, ["uid", col])
    except (MissingColumnError, PoolError) as e:
        raise DedupError(f"--eval-embeddings needs the pool's image embeddings ({col}): {e}") from e
    c = t.column(col)
    rows = np.flatnonzero(np.asarray(c.is_valid().to_numpy(zero_copy_only=False), dtype=bool))
    found = {"part": np.zeros(0, np.int64), "row": np.zeros(0, np.int64), "eval": np.zeros(0, np.int64),
             "uid": [], "cosine": np.zeros(0, np.float32)}
    if not len(rows) or not len(q):
        return found
    emb = embeddings_to_numpy(c.take(pa.array(rows))).astype(np.float32).astype(np.float64)
    if emb.shape[1] != q.shape[1]:
        raise DedupError(f"{path}: {col} has width {emb.shape[1]}, the eval embeddings {q.shape[1]}")
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    step = max(1, BLOCK_VALUES // len(q))
    at, ev, sim = [], [], []
    for s in range(0, len(emb), step):
        sims = emb[s:s + step] @ q.T
        a, b = np.nonzero(sims >= min_cosine)
        at.append(a + s)
        ev.append(b)
        sim.append(sims[a, b])
    prow = rows[np.concatenate(at)]
    return {"part": np.full(len(prow), part, np.int64), "row": prow.astype(np.int64), "eval": np.concatenate(ev).astype(np.int64),
            "uid": t.column("uid").cast(pa.string()).take(pa.array(prow)).to_pylist(),
            "cosine": np.concatenate(sim).astype(np.float32)}


def check_phash_file(task: tuple, shared: tuple[np.ndarray, int, list[str]]) -> dict:
    """One phash column file against the eval hashes: writes its `contaminated` file into the staging folder
    (True for a pHash match or a uid matched by cosine; null where there was no usable pHash and no cosine
    match) and returns its counts and pHash matches (eval row, pool row, uid, distance)."""
    f, staging = task
    eval_values, max_distance, cosine_uids = shared
    t = storage.read_parquet(f.path, columns=["uid", "phash"])
    uid = t.column("uid").cast(pa.string())
    text = t.column("phash").cast(pa.string())
    values, valid = parse_hex64(text)
    present = np.asarray(pc.is_valid(text).to_numpy(zero_copy_only=False), dtype=bool)
    index = np.flatnonzero(valid)
    qi, bj, dist = cross_pairs(eval_values, values[index], max_distance)
    local = index[bj]
    contaminated = np.zeros(len(valid), bool)
    contaminated[local] = True
    if cosine_uids:
        contaminated |= np.asarray(pc.is_in(uid, value_set=pa.array(cosine_uids, pa.string())).to_numpy(zero_copy_only=False), bool)
    checked = valid | contaminated
    storage.write_parquet(pa.table({"uid": uid, "contaminated": pa.array(contaminated, pa.bool_(), mask=~checked)}),
                          storage.path(staging) / f"{f.stem}.parquet")
    return {"rows": len(valid), "checked": int(valid.sum()), "without": int((~present).sum()),
            "malformed": int((present & ~valid).sum()), "contaminated": int(contaminated.sum()),
            "eval": qi.astype(np.int64), "row": (f.offset + local).astype(np.int64), "uid": uid.take(pa.array(local)).to_pylist(),
            "distance": dist.astype(np.int32)}


def _map(engine, fn, items: list, shared):
    """Run the tasks here (engine None: the local engine's in-process default) or on the engine's workers,
    `shared` sent to each worker once."""
    if engine is None:
        return [fn(item, shared=shared) for item in items]
    return engine.map_shared(fn, items, shared)


def _concat(found: list[dict], keys: tuple[str, ...]) -> dict:
    out = {k: np.concatenate([d[k] for d in found]) if found else np.zeros(0) for k in keys}
    out["uid"] = np.array([u for d in found for u in d["uid"]], dtype=object)
    return out


def run_decontaminate(pool_root: str | os.PathLike, eval_dir: str | os.PathLike, *, engine=None, max_distance: int = 4,
                      min_cosine: float | None = None, eval_embeddings: str | None = None, arch: str = "l14") -> dict:
    """Match the pool against the eval sets and write the decontam columns and the report. The eval side
    (hashes, embeddings) is small and computed here; each pool phash file (and, for cosine, each pool
    partition) is one task, here or on `engine`'s workers; only counts and the (few) matches come back."""
    from curate.pool import Pool

    pool_root = storage.path(pool_root)  # a folder, or an object-store URL
    start = time.perf_counter()
    if eval_embeddings and min_cosine is None:
        raise DedupError("--eval-embeddings needs --min-cosine")
    files = list_files(pool_root, "phash")
    evals, estats = hash_eval_sets(eval_dir)
    eval_values = evals.column("phash").to_numpy().view(np.uint64)
    cos = _concat([], ("part", "row", "eval", "cosine"))
    q_set = q_key = np.zeros(0, str)
    if eval_embeddings:
        q, q_set, q_key = read_eval_embeddings(eval_embeddings)
        col = embedding_column(arch)
        tasks = [(str(pool_root), p.path, col, i) for i, p in enumerate(Pool(pool_root).partitions())]
        cos = _concat(_map(engine, cosine_matches, tasks, (q, float(min_cosine))), ("part", "row", "eval", "cosine"))
        order = np.lexsort((cos["row"], cos["part"], cos["eval"]))
        cos = {k: v[order] for k, v in cos.items()}
    # the column files, each task writing its own: null where there was no usable pHash to check
    target = pool_root / "columns" / "decontam"
    staging = pool_root / ".decontam.staging"
    storage.remove_tree(staging)
    staging.mkdir(parents=True)
    try:
        cosine_uids = sorted(set(cos["uid"].tolist()))
        done = _map(engine, check_phash_file, [(f, str(staging)) for f in files], (eval_values, max_distance, cosine_uids))
    except BaseException:
        storage.remove_tree(staging)
        raise
    ph = _concat(done, ("eval", "row", "distance"))
    order = np.lexsort((ph["row"], ph["eval"]))
    ph = {k: v[order] for k, v in ph.items()}
    qi = ph["eval"].astype(np.int64)
    report_table = pa.concat_tables([pa.table({
        "pool_uid": pa.array(ph["uid"].tolist(), pa.string()),
        "eval_set": evals.column("eval_set").take(pa.array(qi)),
        "eval_shard": evals.column("eval_shard").take(pa.array(qi)),
        "eval_key": evals.column("eval_key").take(pa.array(qi)),
        "method": pa.array(["phash"] * len(qi), pa.string()),
        "distance": pa.array(ph["distance"].astype(np.int32), pa.int32()),
        "cosine": pa.nulls(len(qi), pa.float32()),
    }), pa.table({
        "pool_uid": pa.array(cos["uid"].tolist(), pa.string()),
        "eval_set": pa.array(q_set[cos["eval"].astype(np.int64)], pa.string()),
        "eval_shard": pa.nulls(len(cos["eval"]), pa.int32()),
        "eval_key": pa.array(q_key[cos["eval"].astype(np.int64)], pa.string()),
        "method": pa.array(["cosine"] * len(cos["eval"]), pa.string()),
        "distance": pa.nulls(len(cos["eval"]), pa.int32()),
        "cosine": pa.array(cos["cosine"].astype(np.float32), pa.float32()),
    })])
    replace_folder(staging, target, pool_root / ".decontam.old")
    with atomic_path(pool_root / "decontamination_report.parquet") as tmp:
        pq.write_table(report_table, tmp)
    per_set = {}
    for name in evals.column("eval_set").unique().to_pylist():
        sel = pc.equal(report_table.column("eval_set"), name)
        per_set[name] = {"matches": int(pc.sum(sel).as_py() or 0),
                         "pool_samples": len(pc.unique(report_table.column("pool_uid").filter(sel)))}
    stats = {
        "pool": str(pool_root), "eval_dir": str(eval_dir), "engine": getattr(engine, "name", "local"),
        "max_distance": max_distance, "min_cosine": min_cosine, **estats,
        "pool_rows": sum(d["rows"] for d in done), "pool_rows_checked": sum(d["checked"] for d in done),
        "pool_rows_without_phash": sum(d["without"] for d in done), "pool_rows_malformed_phash": sum(d["malformed"] for d in done),
        "phash_matches": int(len(qi)), "cosine_matches": int(len(cos["eval"])),
        "contaminated": sum(d["contaminated"] for d in done), "per_eval_set": per_set,
        "report": str(pool_root / "decontamination_report.parquet"), "seconds": round(time.perf_counter() - start, 3),
    }
    write_json(pool_root / "columns" / "decontam_stats.json", stats)
    return stats


__all__ = ["EvalReadError", "check_phash_file", "cosine_matches", "eval_sets", "hash_eval_sets", "iter_eval_images",
           "run_decontaminate"]
