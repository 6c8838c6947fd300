"""The column store: per-sample values computed by stages (`POOL/columns/<signal>/*.parquet`, keyed by uid).

Filters name the columns they read; a column the metadata lacks is looked up here and joined to the
partition by uid. A uid with no stored value gets null, which filters treat as missing (a sample that
was never downloaded has no pHash, and no CLIP score of our own).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import is_temporary

#: which command produces a column, for the error a user sees when it is missing
PRODUCERS = {
    "phash": "curate stage --signals phash",
    "sha256": "curate stage --signals sha256",
    "dedup_phash_keep": "curate dedup --method phash --max-distance D",
    "dedup_sha256_keep": "curate dedup --method sha256",
    "dedup_semantic_keep": "curate dedup --method semantic --eps E",
    "contaminated": "curate decontaminate --eval-dir EVALS",
    "clip_b32_similarity_score": "curate stage --signals clip --model ViT-B-32 --pretrained openai",
    "clip_l14_similarity_score": "curate stage --signals clip --model ViT-L-14 --pretrained openai",
    "l14_img": "curate stage --signals clip --model ViT-L-14 --pretrained openai",
    "b32_img": "curate stage --signals clip --model ViT-B-32 --pretrained openai",
    "aesthetic_score": "curate stage --signals aesthetic --aesthetic-weights FILE",
}


class MissingColumnError(ValueError):
    """A filter needs a column found neither in the metadata nor in the column store."""


def store_files(pool_root: str | Path, signal: str) -> list[str]:
    d = storage.path(pool_root) / "columns" / signal
    return sorted(str(p) for p in d.glob("*.parquet") if not is_temporary(p)) if d.is_dir() else []


_FOUND: dict[tuple[str, str], str] = {}


def find_store_signal(pool_root: str, column: str) -> str | None:
    """The signal folder whose files carry `column` (None when no stage has written it yet).

    Hits are remembered per process (long-lived Dask workers ask often); misses are not, since a
    stage may write the column later.
    """
    key = (str(pool_root), column)
    if key in _FOUND:
        return _FOUND[key]
    root = storage.path(pool_root) / "columns"
    if not root.is_dir():
        return None
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = store_files(pool_root, d.name)
        if files and column in pq.read_schema(storage.arrow_source(files[0])).names:
            _FOUND[key] = d.name
            return d.name
    return None


def join_store_columns(pool_root: str | Path, uids: pa.ChunkedArray | pa.Array, columns: list[str], where: str,
                       same_split: str | None = None) -> pa.Table:
    """The stored values of `columns` for each of `uids`, in that order (null where none was stored).

    `same_split` names the store file that most likely holds these uids (a stage that ran over the same
    partitioning writes `<partition stem>.parquet`); when it holds them all, no other file is read, which
    keeps a pool-wide filter linear in the pool instead of partitions x store files.
    """
    out: dict[str, pa.ChunkedArray] = {}
    by_signal: dict[str, list[str]] = {}
    for col in columns:
        signal = find_store_signal(str(pool_root), col)
        if signal is None:
            hint = PRODUCERS.get(col)
            raise MissingColumnError(
                f"{where}: column {col!r} is in neither the metadata nor the column store {storage.path(pool_root) / 'columns'}"
                + (f"; compute it with `{hint}`" if hint else "")
            )
        by_signal.setdefault(signal, []).append(col)
    uids = pa.chunked_array([uids]) if isinstance(uids, pa.Array) else uids
    wanted = pc.unique(uids)
    for signal, cols in by_signal.items():
        stored = _stored_rows(pool_root, signal, cols, wanted, same_split)
        # First value per uid wins (a uid appears once per stage; upsampled copies share it).
        idx = pc.index_in(uids, value_set=stored.column("uid"))
        for col in cols:
            out[col] = pc.take(stored.column(col), idx)
    return pa.table({c: out[c] for c in columns})


def _stored_rows(pool_root, signal: str, cols: list[str], wanted: pa.Array, same_split: str | None) -> pa.Table:
    if same_split:
        guess = storage.path(pool_root) / "columns" / signal / f"{same_split}.parquet"
        if guess.exists():
            t = pq.ParquetFile(storage.arrow_source(guess)).read(columns=["uid", *cols])
            t = t.filter(pc.is_in(t.column("uid"), value_set=wanted))
            if len(pc.unique(t.column("uid"))) == len(wanted):
                return t
    import pyarrow.dataset as ds  # here, not at the top: it imports pandas (~0.4 s in every worker process)

    dataset = storage.dataset(store_files(pool_root, signal))
    return dataset.to_table(columns=["uid", *cols], filter=pc.is_in(ds.field("uid"), value_set=wanted))


def read_columns(pool_root: str | Path, partition_path: str, columns: list[str]) -> pa.Table:
    """`columns` for one partition: from its metadata file where present, else from the store (by uid)."""
    from curate.pool import partition_schema, read_partition

    present = set(partition_schema(partition_path).names)
    npz = _npz_columns(partition_path, [c for c in columns if c in EMBEDDING_KEYS and c not in present])
    # `text` may be img2dataset's `caption`; read_partition resolves that alias.
    from_meta = [c for c in columns if c in present or c == "text"]
    from_store = [c for c in columns if c not in from_meta and c != "uid" and c not in npz]
    key = ["uid"] if from_store or "uid" in columns else []  # the join key, only when needed
    table = read_partition(partition_path, list(dict.fromkeys([*key, *from_meta])))
    if from_store:
        joined = join_store_columns(pool_root, table.column("uid"), from_store, partition_path, same_split=storage.path(partition_path).stem)
        for c in from_store:
            table = table.append_column(c, joined.column(c))
    for c, arr in npz.items():
        if len(arr) != table.num_rows and table.num_columns:
            raise MissingColumnError(f"{partition_path}: its .npz holds {len(arr)} rows of {c!r}, the parquet {table.num_rows}")
        table = table.append_column(c, embeddings_to_arrow(arr))
    return table


#: DataComp's metadata ships CLIP embeddings in an .npz beside each parquet, rows in the same order.
EMBEDDING_KEYS = ("b32_img", "b32_txt", "l14_img", "l14_txt")


def _npz_columns(partition_path: str, keys: list[str]) -> dict:
    if not keys:
        return {}
    import numpy as np

    npz_path = storage.path(partition_path).with_suffix(".npz")
    if not npz_path.exists():
        return {}
    with storage.open_file(npz_path, "rb") as f, np.load(f, allow_pickle=False) as npz:
        return {k: npz[k] for k in keys if k in npz.files}


def embeddings_to_arrow(arr) -> pa.FixedSizeListArray:
    """An (N, D) array as a fixed-size-list column (float16 kept as float16)."""
    import numpy as np

    arr = np.ascontiguousarray(arr)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def embeddings_to_numpy(col) -> "np.ndarray":
    """A fixed-size-list column back to an (N, D) array, row for row; a null row becomes a row of NaN.

    (pyarrow's `flatten()` drops null rows, which would shift every row after a failed image.)
    """
    import numpy as np

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    width = col.type.list_size
    n = len(col)
    values = col.values.slice(col.offset * width, n * width)
    if col.null_count == 0 and values.null_count == 0:
        return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(n, width)
    dense = pc.fill_null(pc.cast(values, pa.float32()), float("nan")).to_numpy(zero_copy_only=False).reshape(n, width).copy()
    rows_null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    dense[rows_null] = np.nan
    return dense
