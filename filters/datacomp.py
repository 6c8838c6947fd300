"""DataComp's metadata baselines: no_filter, basic, clip_score and laion2b, as its baselines.py defines them.

Words are `len(text.split())` (filters.rules.word_count), languages come from fastText lid.176 (`language`)
and, for laion2b, gcld3 (`language_gcld3`), and scores are compared with thresholds in their own float32.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from filters.base import Filter, FilterConfigError, FilterResult, RankRequest
from filters.rules import char_count, float_column, missing_text, not_language, score_rules, score_values, word_count

CLIP_SCORE_COLUMNS = {"b32": "clip_b32_similarity_score", "l14": "clip_l14_similarity_score"}


def score_column(arch: str) -> str:
    """DataComp's OpenAI score columns for b32/l14; any other tag names the column `curate stage --clip-tag TAG` writes."""
    if arch in CLIP_SCORE_COLUMNS:
        return CLIP_SCORE_COLUMNS[arch]
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", str(arch)):
        raise FilterConfigError(f"--arch {arch!r}: use b32, l14 or a lower-case tag given to `curate stage --clip-tag`")
    return f"clip_{arch}_similarity_score"


class NoFilter(Filter):
    name = "no_filter"
    description = "Every sample of the pool (DataComp's no-filtering baseline)."
    columns = ()

    def apply(self, table: pa.Table) -> FilterResult:
        return FilterResult(keep=np.ones(table.num_rows, dtype=bool))


class Basic(Filter):
    name = "basic"
    description = (
        "English caption with more than 2 words and more than 5 characters; "
        "shorter image side >= 200 px and aspect ratio <= 3 (DataComp's basic filter)."
    )
    columns = ("text", "language", "original_width", "original_height")

    def __init__(self, min_words: int = 2, min_chars: int = 5, min_side: int = 200, max_aspect: float = 3.0, language: str = "en"):
        self.min_words, self.min_chars = min_words, min_chars
        self.min_side, self.max_aspect, self.language = min_side, max_aspect, language

    def params(self) -> dict:
        return {
            "language": self.language,
            "words_more_than": self.min_words,
            "chars_more_than": self.min_chars,
            "min_side": self.min_side,
            "max_aspect_ratio": self.max_aspect,
        }

    def apply(self, table: pa.Table) -> FilterResult:
        text = table.column("text")
        width = float_column(table.column("original_width"))
        height = float_column(table.column("original_height"))
        short = np.fmin(width, height)
        long = np.fmax(width, height)
        missing_size = np.isnan(width) | np.isnan(height) | (short <= 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            aspect = long / short
            rules = {
                "missing_caption": missing_text(text),
                "too_few_words": word_count(text) <= self.min_words,
                "too_few_chars": char_count(text) <= self.min_chars,
                "not_english" if self.language == "en" else f"not_{self.language}": not_language(table.column("language"), self.language),
                "missing_size": missing_size,
                "image_too_small": ~missing_size & ~(short >= self.min_side),
                "aspect_ratio": ~missing_size & ~(aspect <= self.max_aspect),
            }
        return FilterResult.from_rules(table.num_rows, rules)


class ClipScore(Filter):
    name = "clip_score"
    description = (
        "CLIP image-text similarity at least a threshold, or in the top fraction of the whole pool "
        "(threshold = score at rank int(N*fraction) sorted descending)."
    )

    def __init__(self, arch: str = "l14", fraction: float | None = None, threshold: float | None = None):
        if (fraction is None) == (threshold is None):
            raise FilterConfigError("clip_score needs exactly one of --fraction or --threshold")
        if fraction is not None and not 0.0 < fraction <= 1.0:
            raise FilterConfigError(f"--fraction must be in (0, 1], got {fraction}")
        self.arch, self.fraction, self.threshold = arch, fraction, threshold
        self.column = score_column(arch)
        self.columns = (self.column,)

    def params(self) -> dict:
        return {"arch": self.arch, "column": self.column, "fraction": self.fraction, "threshold": self.threshold}

    def rank_requests(self) -> list[RankRequest]:
        return [RankRequest(self.column, self.fraction)] if self.threshold is None else []

    def score_thresholds(self) -> list[tuple[str, float]]:
        return [(self.column, self.threshold)] if self.threshold is not None else []

    def label(self) -> str:
        what = f"top {self.fraction:.0%}" if self.fraction is not None else f">= {self.threshold:g}"
        return f"clip_score[{self.arch} {what}]"

    def bind(self, resolved: dict[RankRequest, float]) -> "ClipScore":
        if self.threshold is not None:
            return self
        bound = ClipScore(self.arch, threshold=float(resolved[RankRequest(self.column, self.fraction)]))
        bound.fraction = self.fraction
        return bound

    def apply(self, table: pa.Table) -> FilterResult:
        if self.threshold is None:
            raise FilterConfigError("clip_score with a fraction must be bound to its pool-wide threshold first")
        return FilterResult.from_rules(table.num_rows, score_rules(score_values(table.column(self.column)), self.threshold))


class Laion2B(Filter):
    name = "laion2b"
    description = ("English caption by gcld3 and OpenAI B/32 CLIP score >= 0.28 (DataComp's LAION-2B replication, "
                   "which uses gcld3, not fastText, for the language).")
    columns = ("text", "language_gcld3", "clip_b32_similarity_score")

    threshold = 0.28  # part of the definition, not an option: `--threshold` belongs to clip_score

    def __init__(self, language: str = "en"):
        self.language = language

    def params(self) -> dict:
        return {"language": self.language, "language_detector": "gcld3", "column": "clip_b32_similarity_score",
                "threshold": self.threshold}

    def score_thresholds(self) -> list[tuple[str, float]]:
        return [("clip_b32_similarity_score", self.threshold)]

    def apply(self, table: pa.Table) -> FilterResult:
        rules = {"not_english": not_language(table.column("language_gcld3"), self.language)}
        rules.update(score_rules(score_values(table.column("clip_b32_similarity_score")), self.threshold))
        return FilterResult.from_rules(table.num_rows, rules)
