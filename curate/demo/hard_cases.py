"""DataComp-schema metadata made of the cases where a re-implementation of DataComp's rules can part from it.

Captions whose words are split by every whitespace Python's `str.split()` knows (and by look-alikes it does
not), newlines and `\\r\\n` (language id, fastText tokens), empty and blank captions, captions at the word and
character bounds, other languages, words WordNet finds only after Python's split; CLIP scores that tie
float32 thresholds (0.26, 0.28, 0.3) and their float32 neighbours; image sizes on the 200 px and 3:1 bounds.
Used by the fidelity tests and by benchmarks/datacomp_fidelity.py, which runs DataComp's own code on it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.demo.metadata import EN_WORDS, OTHER_LANGS, random_uids

PY_SPACES = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
             "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
NOT_SPACES = ("\u200b", "\u180e", "\ufeff", "\u2060")  # join words to Python
FIXED = (
    "\x0bsky\x0bblue\x0bclouds", "two\xa0dogs", "two\xa0dogs on\xa0a beach", "dog\r\ncat\r\nbird", "a dog\nin the\npark",
    "cat\n\n\n\n", "\n\n\n\n\n\n", "\r\n\r\n\r\n", "", " ", "      ", "\u3000\u3000\u3000", "ok", "a b", "a b c", "ab cd ef",
    "a\u200bphoto of a dog", "the dog,", "Dogs!", "goldfish in a bowl", "a tabby cat on a mat", "St. Bernard puppy",
    "photo\x1cof\x1ca\x1cbeach", "a\x85b\x85c\x85d", "tiger\u2028shark\u2028swimming", "hen\tand\tchicks\there",
)
THRESHOLDS = (0.26, 0.28, 0.3)


def hard_captions(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for i in range(n):
        k = rng.integers(6)
        if k == 0:
            out.append(FIXED[rng.integers(len(FIXED))])
        elif k in (1, 2):
            words = EN_WORDS[rng.integers(len(EN_WORDS))].split(" ")
            seps = rng.choice(list(PY_SPACES) + list(NOT_SPACES) + [" "] * 20, size=len(words) - 1)
            out.append(words[0] + "".join(s + w for s, w in zip(seps, words[1:])))
        elif k == 3:
            out.append(OTHER_LANGS[rng.integers(len(OTHER_LANGS))].replace(" ", rng.choice(["\n", " ", "\xa0"])))
        else:
            out.append(EN_WORDS[rng.integers(len(EN_WORDS))])
    return out


def tie_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 scores; a third sit on a float32 threshold or one float32 step either side of it."""
    scores = rng.normal(0.27, 0.05, n).astype(np.float32)
    tie = rng.random(n) < 0.33
    base = np.float32(rng.choice(THRESHOLDS, n))
    step = rng.integers(-1, 2, n)
    nudged = np.where(step < 0, np.nextafter(base, np.float32(0)), np.where(step > 0, np.nextafter(base, np.float32(1)), base))
    return np.where(tie, nudged, scores).astype(np.float32)


def hard_sizes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    short = rng.choice([150, 199, 200, 201, 256, 512], n)
    ratio = rng.choice([1.0, 1.5, 2.9999, 3.0, 3.0001, 3.5], n)
    long = np.floor(short * ratio + 0.5).astype(np.int64)
    long[ratio == 3.0] = short[ratio == 3.0] * 3
    swap = rng.random(n) < 0.5
    return np.where(swap, long, short).astype(np.int64), np.where(swap, short, long).astype(np.int64)


def hard_case_metadata(n: int, seed: int = 0, url_prefix: str = "http://127.0.0.1:1/img/") -> pa.Table:
    """n rows in DataComp's metadata schema; no null captions (DataComp's scripts would stop on one)."""
    rng = np.random.default_rng(seed)
    uids = random_uids(rng, n)
    width, height = hard_sizes(rng, n)
    return pa.table({
        "uid": pa.array(uids, pa.string()),
        "url": pa.array([f"{url_prefix}{u}.jpg" for u in uids], pa.string()),
        "text": pa.array(hard_captions(rng, n), pa.string()),
        "original_width": pa.array(width),
        "original_height": pa.array(height),
        "clip_b32_similarity_score": pa.array(tie_scores(rng, n), pa.float32()),
        "clip_l14_similarity_score": pa.array(tie_scores(rng, n), pa.float32()),
    })
