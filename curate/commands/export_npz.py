"""`curate export-npz`: CLIP embeddings from the column store as DataComp-style npz files.

DataComp ships, beside each metadata parquet, an .npz with `b32_img`, `b32_txt`, `l14_img`, `l14_txt`
whose rows follow the parquet's rows. This writes, per shard, `OUT/{shard:08d}.npz` with `<tag>_img` and
`<tag>_txt` (float16, L2-normalised, rows in shard order) and `OUT/{shard:08d}.parquet` with the same rows:
`uid`, each tag's `clip_<tag>_similarity_score` and `<tag>_status`. A sample whose image or caption could
not be encoded has a zero row (an npz has no nulls) and its status says why.
"""

from __future__ import annotations

NAME = "export-npz"
ORDER = 25
HELP = "write CLIP embeddings from the column store as DataComp-style npz files"
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def add_arguments(p) -> None:
    p.add_argument("--pool", required=True)
    p.add_argument("--tag", action="append", default=None,
                   help="clip column tag to export (b32, l14, or another model's tag); repeat for several; default: all")
    p.add_argument("--output", default=None, help="output folder (default POOL/npz); POOL and OUTPUT may be s3:// URLs")


def export_npz(pool_root, tags: list[str] | None = None, output=None) -> dict:
    from pathlib import Path

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate import storage
    from curate.atomic import atomic_path, is_temporary, remove_stale_temporaries
    from curate.paths import refuse_overlap

    # a Path, or a UPath for an object store
    out = storage.path(output) if output else storage.path(pool_root) / "npz"
    if not storage.same_place(out, storage.path(pool_root) / "npz"):  # the pool's own npz folder, or one outside it
        refuse_overlap({"the pool": pool_root}, out)
    root = storage.path(pool_root) / "columns"
    available = sorted(p.name[len("clip_"):] for p in root.glob("clip_*") if p.is_dir()) if root.is_dir() else []
    tags = list(dict.fromkeys(tags or available))
    if not tags:
        raise ValueError(f"{root}: no clip columns to export (run `curate stage --signals clip` first)")
    missing = [t for t in tags if t not in available]
    if missing:
        raise ValueError(f"no clip columns for tag(s) {', '.join(missing)} in {root}; available: {', '.join(available) or 'none'}")
    shard_files = {t: {p.name: p for p in (root / f"clip_{t}").glob("*.parquet") if not is_temporary(p)} for t in tags}
    names = sorted(set.intersection(*(set(f) for f in shard_files.values())))
    skipped = sorted(set.union(*(set(f) for f in shard_files.values())) - set(names))
    remove_stale_temporaries(out)  # left by a killed export
    rows = 0
    for name in names:
        arrays, cols, uids = {}, {}, None
        for t in tags:
            table = pq.read_table(shard_files[t][name]) if not storage.is_url(root) else storage.read_parquet(shard_files[t][name])
            if uids is None:
                uids = table.column("uid")
            elif not table.column("uid").equals(uids):
                raise ValueError(f"clip_{t}/{name}: rows differ from clip_{tags[0]}/{name}; re-run the stage")
            for kind in ("img", "txt"):
                col = table.column(f"{t}_{kind}").combine_chunks()
                width = col.type.list_size
                valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)
                dense = np.zeros((len(col), width), np.float16)
                values = np.asarray(col.values.to_numpy(zero_copy_only=False), np.float16).reshape(-1, width)
                dense[valid] = values[col.offset:col.offset + len(col)][valid]
                arrays[f"{t}_{kind}"] = dense
            cols[f"clip_{t}_similarity_score"] = table.column(f"clip_{t}_similarity_score")
            cols[f"{t}_status"] = table.column("status")
        stem = Path(name).stem
        with atomic_path(out / f"{stem}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        with atomic_path(out / f"{stem}.parquet") as tmp:
            pq.write_table(pa.table({"uid": uids, **cols}), tmp)
        rows += len(uids)
    return {"tags": tags, "shards": len(names), "rows": rows, "output": str(out), "shards_missing_a_tag": skipped}


def main(args) -> int:
    stats = export_npz(args.pool, args.tag, args.output)
    print(f"export-npz: {stats['rows']} rows of {', '.join(stats['tags'])} in {stats['shards']} shards -> {stats['output']}")
    if stats["shards_missing_a_tag"]:
        print(f"  not exported (a tag is missing for them): {', '.join(stats['shards_missing_a_tag'])}")
    return 0
