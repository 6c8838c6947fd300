"""WordNet 3.0 and ImageNet-21k's synset list, offline, for DataComp's text_based rule.

DataComp looks each caption word up with nltk (`wordnet.synsets(word)[0].offset()`) in the WordNet 3.0
that `nltk.download("wordnet")` fetches, and keeps the caption when that offset is one of ImageNet-21k's
(`imagenet21k_wordnet_ids.txt`). Here nltk reads the same database from Debian's `wordnet-base` package
(/usr/share/wordnet, installed by the set-up), or from nltk's own data when that is installed, and the
synset list is timm's `imagenet21k_goog_synsets.txt`, byte-identical to DataComp's (same sha256).

Debian ships every file nltk's reader needs except `lexnames` (the 45 lexicographer file names, fixed
since WordNet 1.5, which only name a synset's lexname and never change an offset); it is given from the
table below. `map_wn` is the OMW version map, not needed for English lookups.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import warnings
from functools import lru_cache
from pathlib import Path

DEBIAN_WORDNET = "/usr/share/wordnet"
IMAGENET21K_SHA256 = "66362bdedf36d933382edca5493fc562dcc17128ce36403c9e730a75f48cb2f2"  # DataComp's file

# lexnames(5WN), in file-number order.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation "
    "noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception "
    "verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_SYNTACTIC_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


class WordNetUnavailable(RuntimeError):
    """Neither Debian's WordNet nor nltk's WordNet data is installed, or nltk itself is missing."""


def _lexnames_file() -> str:
    return "".join(f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


@lru_cache(maxsize=1)
def wordnet():
    """nltk's WordNet 3.0 reader: Debian's database when installed, else nltk's own data."""
    try:
        import nltk.data
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError:
        raise WordNetUnavailable("text_based needs nltk (pip install nltk)") from None
    if os.path.isfile(os.path.join(DEBIAN_WORDNET, "data.noun")):

        class DebianWordNet(WordNetCorpusReader):
            def open(self, file):
                return io.StringIO(_lexnames_file()) if file == "lexnames" else super().open(file)

            def map_wn(self, version="wordnet"):
                return None

        if DEBIAN_WORDNET not in nltk.data.path:
            nltk.data.path.append(DEBIAN_WORDNET)  # nltk reads corpora only under its data paths
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": English only here
            return DebianWordNet(DEBIAN_WORDNET, None)
    from nltk.corpus import wordnet as nltk_wordnet

    try:
        nltk_wordnet.ensure_loaded()
    except LookupError:
        raise WordNetUnavailable(
            f"text_based needs WordNet 3.0: install Debian's wordnet-base ({DEBIAN_WORDNET}; `make setup` does as root) "
            "or nltk's data (python -m nltk.downloader wordnet)") from None
    return nltk_wordnet


def wordnet_source() -> dict:
    """Which WordNet files are read, for stats.json: folder and the sha256 of data.noun (the offsets' file)."""
    reader = wordnet()
    root = Path(str(reader.root.path if hasattr(reader.root, "path") else reader.root))
    data = root / "data.noun"
    digest = hashlib.sha256(data.read_bytes()).hexdigest() if data.is_file() else None
    return {"wordnet": str(root), "version": reader.get_version(), "data_noun_sha256": digest}


_OFFSETS: dict[str, int | None] = {}  # per process: partitions share most of their words


def first_synset_offsets(words) -> dict[str, int | None]:
    """`wordnet.synsets(w)[0].offset()` for each distinct word (None when it has no synset)."""
    wn = wordnet()
    out = {}
    for w in words:
        if w not in _OFFSETS:
            if len(_OFFSETS) > 2_000_000:
                _OFFSETS.clear()
            syn = wn.synsets(w)
            _OFFSETS[w] = syn[0].offset() if syn else None
        out[w] = _OFFSETS[w]
    return out


def imagenet21k_file() -> str:
    """timm's ImageNet-21k synset list (`n01440764`-style ids, one a line)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise WordNetUnavailable("text_based needs timm (installed with open_clip_torch) for the ImageNet-21k synset list")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "_info" / "imagenet21k_goog_synsets.txt"
    if not path.is_file():
        raise WordNetUnavailable(f"{path}: timm's ImageNet-21k synset list is missing")
    return str(path)


def parse_wordnet_ids(lines, where: str) -> frozenset[int]:
    """Offsets from `n01440764`-style ids, as DataComp's `int(x[1:])`."""
    try:
        return frozenset(int(x.strip()[1:]) for x in lines if x.strip())
    except ValueError as e:
        raise ValueError(f"{where}: expected WordNet ids like n01440764, one a line ({e})") from None
