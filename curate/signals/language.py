"""Caption language: offline by default (py3langid, whose model ships in its package), or fastText's
`lid.176.bin` when the user gives its path, as DataComp's basic filter uses.
"""

from __future__ import annotations

import os
from functools import lru_cache

import pyarrow as pa

LANGUAGE_COLUMNS = ("language", "language_score")


class LanguageModelError(ValueError):
    """The fastText model file is missing or not a fastText model."""


class LanguageDetector:
    """Detects the language of captions; `detect` takes many captions at once."""

    def __init__(self, fasttext_model: str | None = None):
        self.fasttext_model = fasttext_model
        if fasttext_model:
            if not os.path.isfile(fasttext_model):
                raise LanguageModelError(f"{fasttext_model}: fastText language model not found (expected lid.176.bin)")
            self._model = _load_fasttext(fasttext_model)
        else:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._model = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    @property
    def name(self) -> str:
        return f"fasttext:{os.path.basename(self.fasttext_model)}" if self.fasttext_model else "py3langid"

    def detect(self, texts) -> pa.Table:
        """A table with `language` (ISO code, null for a missing caption) and `language_score`."""
        texts = list(texts)
        # Pools repeat captions ("image", stock-photo boilerplate): classify each distinct caption once.
        memo: dict[str, tuple[str, float]] = {}
        langs: list[str | None] = []
        scores: list[float | None] = []
        for text in texts:
            if text is None or not text.strip():  # nothing to identify: no language, not a guess
                langs.append(None)
                scores.append(None)
                continue
            hit = memo.get(text)
            if hit is None:
                hit = memo[text] = self._detect_one(text)
            langs.append(hit[0])
            scores.append(hit[1])
        return pa.table({"language": pa.array(langs, pa.string()), "language_score": pa.array(scores, pa.float32())})

    def _detect_one(self, text: str) -> tuple[str, float]:
        if self.fasttext_model:
            # As DataComp's get_fasttext_language: newlines break fastText's predict.
            labels, probs = self._model.predict(text.replace("\n", " "))
            return labels[0].replace("__label__", ""), float(probs[0])
        lang, score = self._model.classify(text)
        return lang, float(score)


@lru_cache(maxsize=4)
def _load_fasttext(path: str):
    try:
        import fasttext
    except ImportError as e:  # pragma: no cover - fasttext-predict is a dependency
        raise LanguageModelError("fastText is not installed (pip install fasttext-predict)") from e
    try:
        return fasttext.load_model(path)
    except Exception as e:
        raise LanguageModelError(f"{path}: not a fastText model ({e})") from e
