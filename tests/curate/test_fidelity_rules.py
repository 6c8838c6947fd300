"""DataComp's rules, one at a time, on the captions and scores where a near-miss would show.

Each reference here is DataComp's own expression (`len(text.split())`, `text.replace("\\n", " ")`,
`df[key] >= threshold` on a float32 column) or, for `fasttext.tokenize` (not in fasttext-predict), a line by
line port of fastText's Dictionary::readWord and the pybind `tokenize` loop around it.
"""

from __future__ import annotations

import random

import fasttext
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from curate.signals.language import Gcld3Detector, LanguageDetector, packaged_fasttext_model
from filters.base import FileRequest
from filters.datacomp import Basic, ClipScore, Laion2B
from filters.imagenet import ImageBased, TextBased, wordnet_hits
from filters.rules import PY_WHITESPACE, fasttext_token_count, python_words, word_count

ALL_WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
LOOKALIKES = "\u200b\u180e\ufeff\u2060\x00\x1b"  # not whitespace to Python: they join words


def col(values, kind=pa.string()):
    return pa.chunked_array([pa.array(values, kind)])


# --------------------------------------------------------------------------------------------------------
# A. words: len(text.split())
# --------------------------------------------------------------------------------------------------------


def test_the_whitespace_table_is_pythons():
    assert PY_WHITESPACE == ALL_WHITESPACE
    assert len(ALL_WHITESPACE) == 29


@pytest.mark.parametrize("ws", list(ALL_WHITESPACE), ids=[f"U+{ord(c):04X}" for c in ALL_WHITESPACE])
def test_every_unicode_whitespace_separates_words(ws):
    texts = [f"sky{ws}blue{ws}clouds", f"{ws}sky{ws}{ws}blue{ws}", ws, ws * 3, f"two{ws}dogs"]
    assert word_count(col(texts)).tolist() == [len(t.split()) for t in texts] == [3, 2, 0, 0, 2]
    words, parent = python_words(col(texts))
    assert words.to_pylist() == [w for t in texts for w in t.split()]
    assert parent.tolist() == [i for i, t in enumerate(texts) for _ in t.split()]


def test_word_count_matches_python_on_random_captions():
    rng = random.Random(15)
    alphabet = ALL_WHITESPACE + LOOKALIKES + "abcXYZé漢字😀.,'-"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    texts += ["", " ", "\n", "\r\n", "a\r\nb", "\x0bsky\x0bblue\x0bclouds", "two\xa0dogs", "a\u200bb", None]
    want = [len(t.split()) if t is not None else 0 for t in texts]
    assert word_count(col(texts)).tolist() == want
    words, parent = python_words(col(texts))
    assert words.to_pylist() == [w for t in texts if t is not None for w in t.split()]


# --------------------------------------------------------------------------------------------------------
# B. image_based's caption filter: len(fasttext.tokenize(text))
# --------------------------------------------------------------------------------------------------------

_FT_SPACE = b" \n\r\t\v\f\x00"


def fasttext_tokenize(text: str) -> list[str]:
    """fastText 0.9.2's `tokenize`: `while (!eof) while (readWord(in, token)) push(token)`, byte by byte."""
    data, pos, tokens = text.encode("utf-8"), 0, []

    def read_word():
        nonlocal pos
        word = bytearray()
        while pos < len(data):
            c = data[pos]
            pos += 1
            if c in _FT_SPACE:
                if not word:
                    if c == ord("\n"):
                        return "</s>"
                    continue
                if c == ord("\n"):
                    pos -= 1  # sungetc: the newline is the next token
                return word.decode("utf-8", "replace")
            word.append(c)
        return word.decode("utf-8", "replace") if word else None

    while (token := read_word()) is not None:
        tokens.append(token)
    return tokens


def test_the_tokenizer_port_on_known_cases():
    assert fasttext_tokenize("cat\n\n\n\n") == ["cat", "</s>", "</s>", "</s>", "</s>"]
    assert fasttext_tokenize("dog\r\ncat") == ["dog", "</s>", "cat"]
    assert fasttext_tokenize("two\xa0dogs") == ["two\xa0dogs"]
    assert fasttext_tokenize("a\vb\x00c\fd") == ["a", "b", "c", "d"]
    assert fasttext_tokenize("") == [] and fasttext_tokenize("   ") == [] and fasttext_tokenize("\n") == ["</s>"]


def test_fasttext_token_count_matches_the_tokenizer():
    rng = random.Random(4)
    alphabet = ALL_WHITESPACE + LOOKALIKES + "abc漢😀"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25))) for _ in range(3000)]
    texts += ["cat\n\n\n\n", "\n\n\n\n\n\n", "      ", "", "a\r\nb", "\x0bsky\x0bblue", None]
    want = [len(fasttext_tokenize(t)) if t is not None else 0 for t in texts]
    assert fasttext_token_count(col(texts)).tolist() == want
    assert fasttext_token_count(col(["cat\n\n\n\n", "two\xa0dogs", "\x0bsky\x0bblue"])).tolist() == [5, 1, 2]


def _bound_image_based(tmp_path):
    """image_based bound to two centroids, with the target nearest the first: rows on e0 are near ImageNet."""
    np.save(tmp_path / "t.npy", np.array([[1.0, 0.0]], np.float32))
    f = ImageBased(targets=str(tmp_path / "t.npy"), k=2)
    f._targets, f._rows = np.array([[1.0, 0.0]], np.float32), 2
    f._centroids = np.eye(2, dtype=np.float32)
    f._target_ids = np.array([0])
    return f


def test_image_based_caption_filter_counts_fasttext_tokens(tmp_path):
    texts = ["cat\n\n\n\n", "\n\n\n\n\n\n", "      ", "two\xa0dogs run", "dog\r\ncat!", "a\x0bphoto", "", "one"]
    n = len(texts)
    table = pa.table({"text": texts, "language": ["en"] * n,
                      "l14_img": pa.array([[1.0, 0.0]] * n, pa.list_(pa.float32(), 2))})
    keep = _bound_image_based(tmp_path).apply(table).keep
    want = [len(fasttext_tokenize(t)) > 1 and len(t) > 5 for t in texts]
    assert keep.tolist() == want == [True, True, False, True, True, True, False, False]


# --------------------------------------------------------------------------------------------------------
# C. newlines become spaces before language id, on both detectors; every non-null caption is classified
# --------------------------------------------------------------------------------------------------------

CAPTIONS = ["dog\r\ncat\r\nbird", "a photo\nof a dog", "a\n\nb\nc", "", " ", "\n", "\r\n", "deux chiens\njouent",
            "a photo of a yellow square", None]


def test_fasttext_sees_the_caption_as_datacomp_does():
    model = fasttext.load_model(packaged_fasttext_model())
    got = LanguageDetector().detect(CAPTIONS)
    want = [None if t is None else model.predict(t.replace("\n", " "))[0][0].split("__label__")[1] for t in CAPTIONS]
    assert got.column("language").to_pylist() == want
    assert got.column("language").to_pylist()[3:7] == ["en"] * 4  # "" and blanks are classified, as DataComp does


def test_gcld3_sees_the_caption_as_datacomp_does():
    import gcld3

    model = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
    got = Gcld3Detector().detect(CAPTIONS).column("language_gcld3").to_pylist()
    want = [None if t is None else model.FindLanguage(text=t.replace("\n", " ")).language for t in CAPTIONS]
    assert got == want


# --------------------------------------------------------------------------------------------------------
# D. thresholds in float32
# --------------------------------------------------------------------------------------------------------


def test_float32_ties_at_the_threshold():
    t32 = np.float32(0.26)
    assert float(t32) < 0.26  # the case: float64 would drop the tie
    scores = np.array([t32, np.nextafter(t32, np.float32(0)), np.nextafter(t32, np.float32(1)), np.nan, 0.3], np.float32)
    table = pa.table({"clip_b32_similarity_score": pa.array(scores, pa.float32()),
                      "clip_l14_similarity_score": pa.array(scores, pa.float32()),
                      "text": ["a b c"] * 5, "language_gcld3": ["en"] * 5})
    df = table.to_pandas()
    want = (df["clip_l14_similarity_score"] >= 0.26).to_numpy()  # DataComp's comparison
    assert want.tolist() == [True, False, True, False, True]
    assert ClipScore("l14", threshold=0.26).apply(table).keep.tolist() == want.tolist()
    laion = Laion2B().apply(table)
    assert laion.keep.tolist() == (df["clip_b32_similarity_score"] >= 0.28).tolist()
    # a float64 column compares in float64, as pandas does
    table64 = pa.table({"clip_l14_similarity_score": pa.array(scores.astype(np.float64), pa.float64())})
    assert ClipScore("l14", threshold=0.26).apply(table64).keep.tolist() == [False, False, True, False, True]


def test_fraction_threshold_keeps_every_float32_tie(tmp_path):
    from curate.engines import LocalEngine
    from curate.pool import Pool
    from curate.run import run_filters
    from curate.subset import read_subset

    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    scores = rng.choice(np.array([0.2, 0.26, 0.31], np.float32), 400)
    uids = [f"{i + 1:032x}" for i in range(400)]
    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"uid": uids, "clip_l14_similarity_score": pa.array(scores, pa.float32())}),
                   tmp_path / "pool" / "m.parquet")
    with LocalEngine(1) as engine:
        run_filters(Pool(tmp_path / "pool"), [ClipScore("l14", fraction=0.5)], tmp_path / "out", engine, report=False)
    threshold = -np.sort(-scores)[int(400 * 0.5)]  # DataComp's get_threshold
    want = np.array([divmod(int(u, 16), 2**64) for u, s in zip(uids, scores) if s >= threshold], dtype="u8,u8")
    assert np.array_equal(read_subset(tmp_path / "out" / "subset.npy"), np.sort(want))


# --------------------------------------------------------------------------------------------------------
# Empty and whitespace-only captions through basic and text_based
# --------------------------------------------------------------------------------------------------------


def test_empty_and_blank_captions():
    texts = ["", " ", "\n\n\n\n\n\n", "\u3000\u3000\u3000\u3000\u3000\u3000", "a dog\xa0on the\xa0grass", "a b c",
             "a b c d", "dog\x0bcat\x0bbird", None]
    n = len(texts)
    lang = LanguageDetector().detect(texts).column("language")
    table = pa.table({"text": texts, "language": lang, "original_width": [300] * n, "original_height": [300] * n})
    keep = Basic().apply(table).keep.tolist()
    df = pd.DataFrame({"text": texts[:-1], "lang": lang.to_pylist()[:-1]})
    want = [l == "en" and len(t.split()) > 2 and len(t) > 5 for t, l in zip(df.text, df.lang)]
    assert keep == want + [False]
    assert keep == [False, False, False, False, False, False, True, True, False]


def test_text_based_looks_up_python_words():
    from filters.wordnet import imagenet21k_file, parse_wordnet_ids, wordnet

    synsets = parse_wordnet_ids(open(imagenet21k_file()).read().splitlines(), "timm")
    wn = wordnet()
    texts = ["two\xa0dogs", "\x0bdog\x0b", "dog", "", "   ", "a\u200bdog", "doggy\u3000bag", None]

    def datacomp(text):  # does_contain_text_entity
        for word in text.split():
            s = wn.synsets(word)
            if s and s[0].offset() in synsets:
                return True
        return False

    hits = wordnet_hits(col(texts), synsets).tolist()
    assert hits == [datacomp(t) if t is not None else False for t in texts]
    assert hits[:3] == [True, True, True] and hits[3:5] == [False, False]
    f = TextBased().bind({FileRequest(imagenet21k_file(), "lines"): open(imagenet21k_file()).read().splitlines()})
    table = pa.table({"text": texts, "language": ["en"] * len(texts)})
    assert f.apply(table).keep.tolist() == hits


def test_stats_name_the_language_models(tmp_path):
    import hashlib

    import pyarrow.parquet as pq

    from curate.engines import LocalEngine
    from curate.pool import Pool
    from curate.run import run_filters

    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"uid": [f"{i + 1:032x}" for i in range(3)], "text": ["a dog on the grass", "", None],
                             "original_width": [300] * 3, "original_height": [300] * 3,
                             "clip_b32_similarity_score": pa.array([0.3, 0.3, 0.3], pa.float32())}),
                   tmp_path / "pool" / "m.parquet")
    with LocalEngine(1) as engine:
        stats = run_filters(Pool(tmp_path / "pool"), [Basic(), Laion2B()], tmp_path / "out", engine, report=False)
    ft, g = stats["language_models"]["language"], stats["language_models"]["language_gcld3"]
    assert ft == {"detector": "fasttext", "file": "lid.176.ftz",
                  "sha256": hashlib.sha256(open(packaged_fasttext_model(), "rb").read()).hexdigest()}
    assert g["detector"] == "gcld3" and g["version"] == "3.0.13" and (g["min_num_bytes"], g["max_num_bytes"]) == (0, 1000)
    with LocalEngine(1) as engine:
        stats = run_filters(Pool(tmp_path / "pool"), [ClipScore("b32", threshold=0.2)], tmp_path / "o2", engine, report=False)
    assert stats["language_models"] == {}
