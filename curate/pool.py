"""The pool on disk: metadata parquet files, webdataset shards from img2dataset, and the column store.

    POOL/metadata/*.parquet          one row per sample, DataComp column names
    POOL/shards/{:08d}.tar           webdataset shards, with img2dataset's {:08d}.parquet and {:08d}_stats.json
    POOL/columns/<signal>/<part>.parquet   what a stage computed for one partition, keyed by uid

A folder that holds DataComp metadata parquet files directly (as DataComp's download script leaves them)
is a metadata-only pool as it is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import is_temporary


class PoolError(ValueError):
    """A pool folder, file or column that is missing or malformed."""


@dataclass(frozen=True)
class Partition:
    """One unit of per-partition work: a metadata parquet file (or a shard's img2dataset parquet)."""

    name: str  # file stem, used to name column-store files
    path: str  # parquet path

    @property
    def kind(self) -> str:
        return "shard" if storage.path(self.path).parent.name == "shards" else "metadata"


@dataclass(frozen=True)
class Shard:
    """A downloaded webdataset shard; whole when img2dataset wrote its stats file."""

    shard_id: int
    tar: str
    parquet: str | None
    stats: str | None

    def expected_successes(self) -> int | None:
        """How many samples the downloader says it wrote (None without a stats file)."""
        if not self.stats or not storage.path(self.stats).exists():
            return None
        try:
            with storage.open_file(self.stats, "r") as f:
                return int(json.load(f)["successes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class Pool:
    def __init__(self, root: str | os.PathLike):
        self.root = storage.path(root)  # a Path, or a UPath for an object-store URL
        if not self.root.exists():
            raise PoolError(f"{self.root}: pool folder does not exist")
        if not self.root.is_dir():
            raise PoolError(f"{self.root}: pool must be a folder")

    @property
    def metadata_dir(self) -> Path:
        sub = self.root / "metadata"
        if sub.is_dir():
            return sub
        if not (self.root / "shards").is_dir() and any(self.root.glob("*.parquet")):
            return self.root  # a bare folder of DataComp metadata parquet files
        return sub

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    def column_dir(self, signal: str) -> Path:
        return self.root / "columns" / signal

    def metadata_files(self) -> list[Path]:
        d = self.metadata_dir
        if not d.is_dir():
            return []
        return sorted(p for p in d.glob("*.parquet") if not is_temporary(p))

    def shards(self) -> list[Shard]:
        """Tar shards in id order. A tar without its stats file is still listed (reshard reports it)."""
        d = self.shards_dir
        if not d.is_dir():
            return []
        out = []
        for tar in sorted(d.glob("*.tar")):
            if is_temporary(tar) or not tar.stem.isdigit():
                continue
            stem = tar.stem
            parquet = d / f"{stem}.parquet"
            stats = d / f"{stem}_stats.json"
            out.append(
                Shard(
                    shard_id=int(stem),
                    tar=str(tar),
                    parquet=str(parquet) if parquet.exists() else None,
                    stats=str(stats) if stats.exists() else None,
                )
            )
        return out

    def has_shards(self) -> bool:
        return bool(self.shards())

    def partitions(self) -> list[Partition]:
        """Metadata files when the pool has them, else the downloader's per-shard parquet files."""
        files = self.metadata_files()
        if not files:
            files = [storage.path(s.parquet) for s in self.shards() if s.parquet]
        if not files:
            raise PoolError(
                f"{self.root}: no metadata found (expected {self.root}/metadata/*.parquet, "
                f"*.parquet directly in the folder, or downloaded shards in {self.root}/shards/)"
            )
        key = tuple(map(str, files))
        if key != getattr(self, "_schemas_checked", None):
            check_schemas(files)
            self._schemas_checked = key
        return [Partition(name=p.stem, path=str(p)) for p in files]


# img2dataset names the caption column `caption`; DataComp's metadata calls it `text`.
COLUMN_ALIASES = {"text": ("caption",)}


def value_kind(t: pa.DataType) -> str | None:
    """What a column's values are, for comparing files: widths, string/binary forms and dictionary encoding
    may differ between a pool's files (pandas writes integers with nulls as floats); None for an all-null
    column, which fits any."""
    if pa.types.is_dictionary(t):
        return value_kind(t.value_type)
    if pa.types.is_null(t):
        return None
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "text"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"list of {value_kind(t.value_type)}"
    return str(t)


def check_schemas(files: list) -> None:
    """Refuse partitions whose columns hold different kinds of values (a score as text in one file, as a
    number in the others), naming both files, before any task fails on it without a name."""
    first: dict[str, tuple[str, pa.DataType, str]] = {}
    for f in files:
        for field in partition_schema(str(f)):
            kind = value_kind(field.type)
            if kind is None:
                continue
            seen = first.setdefault(field.name, (kind, field.type, str(f)))
            if seen[0] != kind:
                raise PoolError(f"{f}: column {field.name!r} is {field.type}, but {seen[1]} in {seen[2]}; "
                                "a pool's metadata files must agree on each column's type")


def names_partition(path_of):
    """Decorator for a per-partition task: an arrow error about the data it read (a score column of strings,
    a value that does not parse) is re-raised as a one-line PoolError naming the partition's file, which
    arrow's own message does not."""
    import functools

    def wrap(task):
        @functools.wraps(task)
        def run(job):
            try:
                return task(job)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
                raise PoolError(f"{path_of(job)}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from e
        return run

    return wrap


def partition_schema(path: str) -> pa.Schema:
    try:
        return pq.read_schema(storage.arrow_source(path))
    except Exception as e:
        raise PoolError(f"{path}: not a readable parquet file ({e})") from e


def read_partition(path: str, columns: list[str]) -> pa.Table:
    """Read only `columns` of one parquet file; a missing column names the column and the file."""
    schema = partition_schema(path)
    names = set(schema.names)
    chosen: dict[str, str] = {}
    for col in columns:
        if col in names:
            chosen[col] = col
            continue
        alias = next((a for a in COLUMN_ALIASES.get(col, ()) if a in names), None)
        if alias is None:
            raise PoolError(f"{path}: column {col!r} is missing (columns present: {', '.join(sorted(names))})")
        chosen[col] = alias
    try:
        # ParquetFile.read, not pq.read_table: the latter goes through pyarrow.dataset, which imports
        # pandas (about a second in every fresh worker process).
        table = pq.ParquetFile(storage.arrow_source(path)).read(columns=list(dict.fromkeys(chosen.values())))
    except Exception as e:
        raise PoolError(f"{path}: failed to read columns {list(chosen.values())} ({e})") from e
    for col, src in chosen.items():
        _check_utf8(path, src, table.column(src))
    return pa.table({col: table.column(src) for col, src in chosen.items()})


def _check_utf8(path: str, name: str, column: pa.ChunkedArray) -> None:
    """A string column must hold UTF-8 (parquet's rule, which its readers do not check): name the file,
    column and row that breaks it, instead of a decoding error later that names none."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        as_bytes = column.cast(pa.large_binary()).to_pylist()  # no check on this cast
        row = next(i for i, v in enumerate(as_bytes) if v is not None and not _is_utf8(v))
        raise PoolError(f"{path}: column {name!r} is a string column but row {row} is not valid UTF-8 "
                        f"({as_bytes[row][:40]!r}); store it as binary or re-encode it") from None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def partition_num_rows(path: str) -> int:
    try:
        return pq.ParquetFile(storage.arrow_source(path)).metadata.num_rows
    except Exception as e:
        raise PoolError(f"{path}: not a readable parquet file ({e})") from e
