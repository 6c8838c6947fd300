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


def word_count(text: pa.ChunkedArray) -> np.ndarray:
    """Whitespace-separated words, as fastText's tokenizer (which DataComp uses) splits a caption."""
    counts = pc.count_substring_regex(text, r"\S+")
    return np.asarray(pc.fill_null(counts, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def char_count(text: pa.ChunkedArray) -> np.ndarray:
    """Characters (code points), as Python's len() counts them in DataComp's script."""
    return np.asarray(pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def float_column(col: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with nulls as NaN."""
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def score_rules(score: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """`score >= threshold`, with a missing (NaN) score its own reason."""
    missing = np.isnan(score)
    with np.errstate(invalid="ignore"):
        below = ~missing & ~(score >= threshold)
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


def normalized_text(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """Lowercase, every run of characters that is not a letter or digit becomes one space, trimmed."""
    lower = pc.utf8_lower(text)
    spaced = pc.replace_substring_regex(lower, r"[^\p{L}\p{N}]+", " ")
    return pc.utf8_trim_whitespace(spaced)


def ngram_hits(text: pa.ChunkedArray, phrases: set[str], max_words: int) -> np.ndarray:
    """True where some run of 1..max_words consecutive words of the normalised caption is in `phrases`.

    Vectorised: words are flattened once, n-grams are joined from shifted slices, and membership is one
    `is_in` per n; no per-row Python.
    """
    norm = normalized_text(text)
    if isinstance(norm, pa.ChunkedArray):
        norm = norm.combine_chunks()
    n = len(norm)
    hits = np.zeros(n, dtype=bool)
    if n == 0 or not phrases:
        return hits
    words_list = pc.split_pattern(pc.fill_null(norm, ""), " ")
    words = pc.list_flatten(words_list)
    parent = np.asarray(pc.list_parent_indices(words_list).to_numpy(zero_copy_only=False))
    value_set = pa.array(sorted(phrases), pa.string())
    m = len(words)
    for k in range(1, max_words + 1):
        if m < k:
            break
        cnt = m - k + 1
        same = parent[: cnt] == parent[k - 1 :]
        if not same.any():
            continue
        parts = [words.slice(j, cnt) for j in range(k)]
        gram = parts[0] if k == 1 else pc.binary_join_element_wise(*parts, " ")
        found = to_numpy_bool(pc.is_in(gram, value_set=value_set)) & same
        hits[parent[: cnt][found]] = True
    return hits
