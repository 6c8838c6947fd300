"""Row rules shared by several filters, on arrow columns, vectorised (no per-row Python)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def to_numpy_bool(arr) -> np.ndarray:
    """An arrow boolean array with nulls counted as False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def missing_text(text: pa.ChunkedArray) -> np.ndarray:
    return to_numpy_bool(pc.is_null(text))


def not_language(language: pa.ChunkedArray, code: str) -> np.ndarray:
    """True where the detected language is not `code` (a missing language is not `code`)."""
    return ~to_numpy_bool(pc.equal(language, code))


#: Every character Python's `str.split()` splits on (`str.isspace()`), which DataComp's `len(text.split())` counts
#: words with: ASCII whitespace, the information separators \x1c-\x1f, NEL, NBSP, U+2028/9, the Zs spaces.
PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                 "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_PY_SPACE = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in PY_WHITESPACE) + "]"
_PY_WORD = "[^" + _PY_SPACE[1:]
#: What fastText's tokenizer (Dictionary::readWord) splits on: these ASCII bytes only; each "\n" is also a token.
_FASTTEXT_WORD = r"[^ \n\r\t\v\f\x00]+"


def _counts(counts) -> np.ndarray:
    return np.asarray(pc.fill_null(counts, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def word_count(text: pa.ChunkedArray) -> np.ndarray:
    """`len(text.split())`, as DataComp's basic filter counts words (0 for a missing caption)."""
    return _counts(pc.count_substring_regex(text, _PY_WORD + "+"))


def python_words(text: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Every caption's `text.split()` flattened, and the row each word came from."""
    lists = pc.split_pattern_regex(pc.fill_null(text, ""), _PY_SPACE + "+")
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    words = pc.list_flatten(lists)
    parent = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False))
    nonempty = to_numpy_bool(pc.not_equal(words, ""))  # split_pattern keeps the ends a leading space leaves
    return words.filter(pa.array(nonempty)), parent[nonempty]


def fasttext_token_count(text: pa.ChunkedArray) -> np.ndarray:
    """`len(fasttext.tokenize(text))`, as DataComp's image_based caption filter counts words.

    fastText's readWord splits on space, \\n, \\r, \\t, \\v, \\f and NUL (nothing else: NBSP joins two words),
    and emits "</s>" for every newline, so "cat\\n\\n" is 3 tokens.
    """
    return _counts(pc.count_substring_regex(text, _FASTTEXT_WORD)) + _counts(pc.count_substring(text, "\n"))


def char_count(text: pa.ChunkedArray) -> np.ndarray:
    """Characters (code points), as Python's len() counts them in DataComp's script."""
    return np.asarray(pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def float_column(col: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with nulls as NaN."""
    fast = _plain_numbers(col, np.float64)
    if fast is not None:
        return fast
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


_NUMPY_OF = {pa.float32(): np.float32, pa.float64(): np.float64, pa.int8(): np.int8, pa.int16(): np.int16,
             pa.int32(): np.int32, pa.int64(): np.int64, pa.uint8(): np.uint8, pa.uint16(): np.uint16,
             pa.uint32(): np.uint32, pa.uint64(): np.uint64}


def _plain_numbers(col, dtype) -> np.ndarray | None:
    """A float or integer column as `dtype` with nulls as NaN, read from arrow's buffers; None for other types.

    pyarrow's to_numpy imports pandas (0.4 s and 30 MB in each worker process that filters a partition)."""
    source = _NUMPY_OF.get(col.type)
    if source is None:
        return None
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out = np.empty(sum(len(c) for c in chunks), dtype=dtype)
    at = 0
    for c in chunks:
        n = len(c)
        out[at : at + n] = np.frombuffer(c.buffers()[1], dtype=source, count=n, offset=c.offset * np.dtype(source).itemsize)
        if c.null_count:
            bits = np.unpackbits(np.frombuffer(c.buffers()[0], dtype=np.uint8), count=c.offset + n, bitorder="little")
            out[at : at + n][bits[c.offset :] == 0] = np.nan
        at += n
    return out


def score_values(col: pa.ChunkedArray) -> np.ndarray:
    """A score column in its own float type (float32 stays float32), nulls as NaN; other types as float64.

    Thresholds are compared in this type, as DataComp's `df[key] >= threshold` compares a float32 column.
    """
    kind = col.type
    if not (pa.types.is_float32(kind) or pa.types.is_float64(kind)):
        return float_column(col)
    return _plain_numbers(col, np.float32 if pa.types.is_float32(kind) else np.float64)


def score_rules(score: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """`score >= threshold` in the score's own float type, with a missing (NaN) score its own reason.

    numpy compares a float32 array with a Python float in float32, as DataComp's pandas does: a score equal
    to float32(0.26) passes 0.26, though float64(float32(0.26)) < 0.26.
    """
    missing = np.isnan(score)
    with np.errstate(invalid="ignore", over="ignore"):
        below = ~missing & ~(score >= score.dtype.type(threshold))
    return {"missing_score": missing, "below_threshold": below}


def bool_column(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(value, present) for a boolean column; a null is present=False."""
    present = ~to_numpy_bool(pc.is_null(col))
    value = to_numpy_bool(pc.cast(col, pa.bool_()))
    return value, present


def embedding_matrix(col) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-size-list (or list) column of vectors as a float32 (N, D) matrix, and a `present` mask.

    Null rows come back as zeros with present=False (a sample with no embedding, never a crash).
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    present = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
    else:
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        ok = lengths[present]
        width = int(ok[0]) if len(ok) else 0
        if len(ok) and (ok != width).any():
            raise ValueError("embedding column has vectors of different lengths")
    out = np.zeros((n, width), dtype=np.float32)
    if present.any():
        values = col.filter(pa.array(present)).flatten()
        out[present] = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)
    return out, present


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uid_hash(uids, seed: int = 0) -> np.ndarray:
    """A uint64 hash of each uid string, mixed with `seed`: the same value on every partitioning of the pool.

    Used wherever a filter must choose rows "at random" yet deterministically (k-means samples, MetaCLIP
    balancing, report examples).
    """
    if isinstance(uids, pa.ChunkedArray):
        uids = uids.combine_chunks()
    arr = uids.cast(pa.binary())
    n = len(arr)
    h = np.full(n, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    h = _splitmix64(h)
    if n == 0:
        return h
    lengths = np.asarray(pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False))
    if (lengths == 32).all() and arr.null_count == 0:
        fixed = arr.cast(pa.binary(32))
        raw = np.frombuffer(fixed.buffers()[1], dtype=np.uint8, count=n * 32, offset=fixed.offset * 32)
        words = raw.reshape(n, 32).copy().view("<u8")  # 4 words of ASCII per uid
        for j in range(4):
            h = _splitmix64(h ^ words[:, j])
        return h
    out = np.empty(n, dtype=np.uint64)  # odd uids (not 32 bytes): per row, still deterministic
    for i, v in enumerate(arr.to_pylist()):
        v = (v or b"").ljust(32, b"\0")
        x = h[i : i + 1]
        for j in range(0, len(v), 8):
            x = _splitmix64(x ^ np.frombuffer(v[j : j + 8].ljust(8, b"\0"), "<u8"))
        out[i] = x[0]
    return out


def uniform_from_hash(h: np.ndarray) -> np.ndarray:
    """Hashes to floats in [0, 1) (53 bits)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
