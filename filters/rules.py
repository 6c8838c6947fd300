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
