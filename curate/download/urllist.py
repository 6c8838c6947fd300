"""Reading a URL list (parquet, csv or jsonl, DataComp's columns) and deciding which rows may be fetched.

A URL list comes from strangers: every problem with the whole file is one `UrlListError` naming the file,
and every problem with one row is a refusal reason for that row, counted and never fetched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curate import storage
from curate.uids import parse_uids

REQUIRED_COLUMNS = ("uid", "url", "text")
SUFFIXES = (".parquet", ".csv", ".jsonl")
# refusal reasons, decided before any request
INVALID_UID = "invalid_uid"
DUPLICATE_UID = "duplicate_uid"
MISSING_URL = "missing_url"
SCHEME = "scheme"
INVALID_TEXT = "invalid_text"  # the caption is not valid UTF-8
INVALID_URL = "invalid_url"  # the URL is not valid UTF-8
# only these schemes, with a host; the downloader checks every redirect hop again
_FETCHABLE = r"^[hH][tT][tT][pP][sS]?://[^/?#\s]"


class UrlListError(ValueError):
    """A URL list that cannot be read or lacks DataComp's columns."""


def list_files(path: str | os.PathLike) -> list[Path]:
    """The list's files: the file itself, or a folder's .parquet/.csv/.jsonl files (local or an object store)."""
    p = storage.path(path)
    if not p.exists():
        raise UrlListError(f"{path}: URL list not found")
    files = sorted(x for x in p.iterdir() if x.suffix in SUFFIXES) if p.is_dir() else [p]
    if not files:
        raise UrlListError(f"{path}: no .parquet, .csv or .jsonl files in this folder")
    return files


def read_url_list(path: str | os.PathLike, columns: tuple[str, ...] | None = None) -> pa.Table:
    """Read a parquet, csv or jsonl URL list (or a folder of them); check DataComp's required columns.

    `columns`: read only these (those a file has), e.g. none of a DataComp parquet's scores and hashes
    when the list is not copied into the pool."""
    tables = [_read_one(str(f), columns) for f in list_files(path)]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise UrlListError(f"{path}: URL list files disagree on their columns ({e})") from e
    if table.num_rows == 0:
        raise UrlListError(f"{path}: the URL list has no rows (only a header?)")
    return table


def _read_one(path: str, columns: tuple[str, ...] | None = None) -> pa.Table:
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".parquet":
            with _source(path) as src:
                names = pq.read_schema(src).names
                table = pq.read_table(src, columns=None if columns is None else [c for c in names if c in columns])
        elif suffix == ".csv":
            as_text = {c: pa.string() for c in REQUIRED_COLUMNS}
            with _source(path) as src:
                table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(column_types=as_text))
        elif suffix in (".jsonl", ".json"):
            with _source(path) as src:
                table = pajson.read_json(src)
        else:
            raise UrlListError(f"{path}: unsupported URL list format {suffix!r} (use .parquet, .csv or .jsonl)")
    except UrlListError:
        raise
    except Exception as e:
        raise UrlListError(f"{path}: cannot read URL list ({e})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise UrlListError(f"{path}: missing column(s) {', '.join(missing)} (columns present: {', '.join(table.column_names)})")
    for col in REQUIRED_COLUMNS:
        table = table.set_column(table.column_names.index(col), col, _as_text(table.column(col), path, col))
    return table


def _source(path: str):
    """What pyarrow's csv and json readers take: the path when local, else the object opened for reading."""
    import contextlib

    return contextlib.nullcontext(path) if not storage.is_url(path) else storage.open_file(path, "rb")


def _as_text(column: pa.ChunkedArray, path: str, name: str) -> pa.ChunkedArray:
    """The column as arrow strings, unvalidated: binary stays bytes-for-bytes, numbers are printed."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.cast(pa.string())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return _view(column.cast(pa.binary()), pa.string())  # validity is checked per row, later
    if pa.types.is_integer(kind) or pa.types.is_null(kind) or pa.types.is_floating(kind):
        return column.cast(pa.string())
    raise UrlListError(f"{path}: column {name!r} holds {kind}, expected text")


def _view(column: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    """The same bytes read as another type (string <-> binary), without validating or copying."""
    return pa.chunked_array([chunk.view(kind) for chunk in column.chunks], kind)


def invalid_utf8_rows(column: pa.ChunkedArray) -> np.ndarray:
    """True for each row whose bytes are not valid UTF-8 (Arrow reads csv/jsonl/parquet without checking)."""
    bad = np.zeros(len(column), dtype=bool)
    start = 0
    for chunk in column.chunks:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            for i, value in enumerate(chunk.view(pa.binary()).to_pylist()):
                if value is not None:
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        bad[start + i] = True
        start += len(chunk)
    return bad


def repaired(column: pa.ChunkedArray, bad: np.ndarray) -> pa.ChunkedArray:
    """The column with each invalid row's bytes decoded with U+FFFD for what is not UTF-8, so it can be stored."""
    if not bad.any():
        return column
    values = _view(column, pa.binary()).to_pylist()
    for i in np.flatnonzero(bad):
        values[i] = values[i].decode("utf-8", "replace").encode()
    return pa.chunked_array([pa.array(values, pa.binary()).view(pa.string())])


def refusal_reasons(table: pa.Table) -> list[str | None]:
    """Per row: None when the row may be fetched, else why not (the reasons above, first that applies)."""
    n = table.num_rows
    uids = table.column("uid")
    bad_uid_bytes = invalid_utf8_rows(uids)
    valid, pairs = parse_uids(repaired(uids, bad_uid_bytes))
    valid &= ~bad_uid_bytes
    duplicate = np.zeros(n, dtype=bool)
    rows = np.flatnonzero(valid)
    if len(rows):
        _, first = np.unique(pairs[rows].view(np.dtype((np.void, 16))), return_index=True)
        duplicate[rows] = True
        duplicate[rows[first]] = False
    url = table.column("url")
    bad_url = invalid_utf8_rows(url)
    text_bad = invalid_utf8_rows(table.column("text"))
    url_ok = repaired(url, bad_url)
    missing = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(url_ok), ""), True).to_numpy(zero_copy_only=False)
    fetchable = pc.fill_null(pc.match_substring_regex(pc.utf8_trim_whitespace(url_ok), _FETCHABLE), False)
    fetchable = fetchable.to_numpy(zero_copy_only=False)
    reasons: list[str | None] = [None] * n
    # a later mask overrides an earlier one: invalid_uid is reported before all else, scheme last
    for mask, reason in ((~fetchable, SCHEME), (missing, MISSING_URL), (bad_url, INVALID_URL), (text_bad, INVALID_TEXT),
                         (duplicate, DUPLICATE_UID), (~valid, INVALID_UID)):
        for i in np.flatnonzero(mask):
            reasons[i] = reason
    return reasons
