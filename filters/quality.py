"""Aesthetic, LAION-A, caption-quality and image-size filters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.base import Filter, FilterConfigError, FilterResult, RankRequest
from filters.rules import bool_column, char_count, float_column, missing_text, score_rules, score_values, to_numpy_bool, word_count

AESTHETIC = "aesthetic_score"


def _number(name: str, v, allow_none=True):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise FilterConfigError(f"{name} must be a number, got {v!r}")
    return float(v)


class Aesthetic(Filter):
    name = "aesthetic"
    description = ("LAION aesthetic predictor v2 score (`aesthetic_score`, about 1-10) at least a threshold, or in the "
                   "top fraction of the whole pool.")
    columns = (AESTHETIC,)

    def __init__(self, threshold: float | None = None, fraction: float | None = None):
        threshold, fraction = _number("threshold", threshold), _number("fraction", fraction)
        if (threshold is None) == (fraction is None):
            raise FilterConfigError("aesthetic needs exactly one of threshold (e.g. 5.0) or fraction (e.g. 0.3)")
        if fraction is not None and not 0.0 < fraction <= 1.0:
            raise FilterConfigError(f"fraction must be in (0, 1], got {fraction}")
        self.threshold, self.fraction = threshold, fraction

    def params(self) -> dict:
        return {"column": AESTHETIC, "threshold": self.threshold, "fraction": self.fraction}

    def label(self) -> str:
        return f"aesthetic[top {self.fraction:.0%}]" if self.fraction is not None else f"aesthetic[>= {self.threshold:g}]"

    def rank_requests(self) -> list[RankRequest]:
        return [RankRequest(AESTHETIC, self.fraction)] if self.threshold is None else []

    def bind(self, resolved: dict) -> "Aesthetic":
        if self.threshold is not None:
            return self
        bound = Aesthetic(threshold=float(resolved[RankRequest(AESTHETIC, self.fraction)]))
        bound.fraction = self.fraction
        return bound

    def score_thresholds(self) -> list[tuple[str, float]]:
        return [(AESTHETIC, self.threshold)] if self.threshold is not None else []

    def apply(self, table: pa.Table) -> FilterResult:
        if self.threshold is None:
            raise FilterConfigError("aesthetic with a fraction must be bound to its pool-wide threshold first")
        rules = score_rules(score_values(table.column(AESTHETIC)), self.threshold)
        return FilterResult.from_rules(table.num_rows, {"missing_aesthetic": rules["missing_score"], "below_aesthetic": rules["below_threshold"]})


class LaionA(Filter):
    name = "laion_a"
    description = ("LAION-A (the subset behind OpenCLIP's ViT-bigG fine-tuning): aesthetic score >= 4.5 and kept by "
                   "pHash deduplication (`dedup_phash_keep`, from `curate dedup`).")
    columns = (AESTHETIC, "dedup_phash_keep")

    def __init__(self, threshold: float = 4.5):
        self.threshold = _number("threshold", threshold, allow_none=False)

    def params(self) -> dict:
        return {"aesthetic_column": AESTHETIC, "threshold": self.threshold, "dedup_column": "dedup_phash_keep"}

    def score_thresholds(self) -> list[tuple[str, float]]:
        return [(AESTHETIC, self.threshold)]

    def apply(self, table: pa.Table) -> FilterResult:
        score = score_rules(score_values(table.column(AESTHETIC)), self.threshold)
        keep_dedup, present = bool_column(table.column("dedup_phash_keep"))
        rules = {
            "missing_aesthetic": score["missing_score"],
            "below_aesthetic": score["below_threshold"],
            "missing_dedup": ~present,
            "phash_duplicate": present & ~keep_dedup,
        }
        return FilterResult.from_rules(table.num_rows, rules)


class CaptionQuality(Filter):
    name = "caption_quality"
    description = ("Caption rules: words and characters within bounds, mostly letters, no URL, not a file name "
                   "(IMG_0042.jpg, DSC_1234), not one word repeated.")
    columns = ("text",)

    def __init__(self, min_words: int = 2, max_words: int | None = None, min_chars: int = 5, max_chars: int | None = 1000,
                 min_letter_ratio: float | None = 0.5, reject_urls: bool = True, reject_filenames: bool = True,
                 min_unique_word_ratio: float | None = 0.5):
        self.min_words, self.max_words, self.min_chars, self.max_chars = min_words, max_words, min_chars, max_chars
        self.min_letter_ratio, self.reject_urls, self.reject_filenames = min_letter_ratio, reject_urls, reject_filenames
        self.min_unique_word_ratio = min_unique_word_ratio
        for n in ("min_words", "max_words", "min_chars", "max_chars"):
            v = getattr(self, n)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise FilterConfigError(f"{n} must be a non-negative integer, got {v!r}")
        for n in ("min_letter_ratio", "min_unique_word_ratio"):
            v = getattr(self, n)
            if v is not None and (_number(n, v) < 0 or v > 1):
                raise FilterConfigError(f"{n} must be in [0, 1], got {v!r}")

    def params(self) -> dict:
        return {k: getattr(self, k) for k in ("min_words", "max_words", "min_chars", "max_chars", "min_letter_ratio",
                                              "reject_urls", "reject_filenames", "min_unique_word_ratio")}

    def apply(self, table: pa.Table) -> FilterResult:
        text = table.column("text")
        n = table.num_rows
        words = word_count(text)
        chars = char_count(text)
        rules = {"missing_caption": missing_text(text), "too_few_words": words <= self.min_words,
                 "too_few_chars": chars <= self.min_chars}
        if self.max_words is not None:
            rules["too_many_words"] = words > self.max_words
        if self.max_chars is not None:
            rules["too_many_chars"] = chars > self.max_chars
        if self.min_letter_ratio is not None:
            letters = np.asarray(pc.fill_null(pc.count_substring_regex(text, r"\p{L}"), 0).to_numpy(zero_copy_only=False))
            with np.errstate(invalid="ignore", divide="ignore"):
                rules["few_letters"] = (chars > 0) & (letters / np.maximum(chars, 1) < self.min_letter_ratio)
        if self.reject_urls:
            rules["has_url"] = to_numpy_bool(pc.match_substring_regex(text, r"(?i)(https?://|www\.)"))
        if self.reject_filenames:
            rules["file_name"] = to_numpy_bool(pc.match_substring_regex(
                text, r"(?i)^\s*(\S*\.(jpe?g|png|gif|webp|bmp|tiff?)|(img|dsc|dscn|dcim|image|photo|pic|screenshot)[ _-]?\d+\S*)\s*$"))
        if self.min_unique_word_ratio is not None and n:
            rules["repeated_words"] = _unique_ratio(text) < self.min_unique_word_ratio
        return FilterResult.from_rules(n, rules)


def _unique_ratio(text: pa.ChunkedArray) -> np.ndarray:
    """Distinct lowercase words / words per caption (1.0 for an empty caption)."""
    lists = pc.split_pattern_regex(pc.utf8_lower(pc.fill_null(text, "")), r"\s+")
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    words = pc.list_flatten(lists)
    parent = pc.list_parent_indices(lists)
    nonempty = pc.not_equal(words, "")
    t = pa.table({"p": parent, "w": words}).filter(nonempty)
    n = len(text)
    total = np.bincount(np.asarray(t.column("p").to_numpy()), minlength=n).astype(np.float64)
    distinct_t = t.group_by(["p", "w"]).aggregate([])
    distinct = np.bincount(np.asarray(distinct_t.column("p").to_numpy()), minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, distinct / np.maximum(total, 1), 1.0)


class ImageSize(Filter):
    name = "image_size"
    description = "Image-size rules on original_width/original_height: shorter side, longer side, pixels, aspect ratio."
    columns = ("original_width", "original_height")

    def __init__(self, min_side: int | None = 200, max_side: int | None = None, min_pixels: int | None = None,
                 max_aspect: float | None = 3.0):
        self.min_side, self.max_side = _number("min_side", min_side), _number("max_side", max_side)
        self.min_pixels, self.max_aspect = _number("min_pixels", min_pixels), _number("max_aspect", max_aspect)

    def params(self) -> dict:
        return {"min_side": self.min_side, "max_side": self.max_side, "min_pixels": self.min_pixels, "max_aspect": self.max_aspect}

    def apply(self, table: pa.Table) -> FilterResult:
        w = float_column(table.column("original_width"))
        h = float_column(table.column("original_height"))
        short, long = np.fmin(w, h), np.fmax(w, h)
        missing = np.isnan(w) | np.isnan(h) | (short <= 0)
        rules = {"missing_size": missing}
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.min_side is not None:
                rules["image_too_small"] = ~missing & ~(short >= self.min_side)
            if self.max_side is not None:
                rules["image_too_large"] = ~missing & ~(long <= self.max_side)
            if self.min_pixels is not None:
                rules["too_few_pixels"] = ~missing & ~(w * h >= self.min_pixels)
            if self.max_aspect is not None:
                rules["aspect_ratio"] = ~missing & ~(long / short <= self.max_aspect)
        return FilterResult.from_rules(table.num_rows, rules)
