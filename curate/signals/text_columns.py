"""Text signals for a metadata partition, cached in the column store (`columns/<signal>/<part>.parquet`).

The language signals (curate.signals.language): DataComp's metadata does not carry them, and `basic`,
`text_based`, `image_based` (fastText, `language`) and `laion2b` (gcld3, `language_gcld3`) need them. A
cache file records which detector and model wrote it, and is recomputed when another one is asked for.
"""

from __future__ import annotations


import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import atomic_path
from curate.signals.language import LANGUAGE_SIGNALS, detector

_DETECTOR_KEY = b"curate.language_detector"


def language_columns(uids: pa.ChunkedArray, text: pa.ChunkedArray, cache_file: str | None, fasttext_model: str | None,
                     signal: str = "language") -> pa.Table:
    """The columns of a language `signal` for each row, read from the cache when it matches, else computed."""
    columns = list(LANGUAGE_SIGNALS[signal])
    det = detector(signal, fasttext_model)
    if cache_file and storage.path(cache_file).exists():
        try:
            cached = pq.ParquetFile(storage.arrow_source(cache_file)).read()
            meta = cached.schema.metadata or {}
            if meta.get(_DETECTOR_KEY) == det.name.encode() and cached.column("uid").equals(uids):
                return cached.select(columns)
        except Exception:
            pass  # a stale or unreadable cache is recomputed
    detected = det.detect(_as_python_text(text))
    if cache_file:
        table = pa.table({"uid": uids, **{c: detected.column(c) for c in columns}})
        table = table.replace_schema_metadata({_DETECTOR_KEY: det.name.encode()})
        try:
            with atomic_path(cache_file) as tmp:
                pq.write_table(table, tmp)
        except OSError:
            pass  # a read-only pool: computing without caching is still correct
    return detected


def _detector_name(fasttext_model: str | None) -> str:
    """The cache marker of the fastText detector (`curate stage --signals language` writes it too)."""
    return detector("language", fasttext_model).name


def _as_python_text(text: pa.ChunkedArray) -> list[str | None]:
    """Captions as str; bytes that are not UTF-8 become None (a missing caption), never a crash."""
    if pa.types.is_binary(text.type) or pa.types.is_large_binary(text.type):
        out = []
        for value in text.to_pylist():
            try:
                out.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
        return out
    return text.to_pylist()


def text_as_utf8(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """A caption column as arrow strings, non-UTF-8 binary values as null."""
    if pa.types.is_string(text.type) or pa.types.is_large_string(text.type):
        return text
    if pa.types.is_binary(text.type) or pa.types.is_large_binary(text.type):
        return pa.chunked_array([pa.array(_as_python_text(text), pa.string())])
    return pc.cast(text, pa.string())
