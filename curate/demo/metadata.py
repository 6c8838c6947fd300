"""Generated metadata in DataComp's schema, for the demo, the tests and the benchmarks.

Captions mix English and other languages, short and empty captions and nulls; sizes include tiny and
extreme-aspect images; scores are float32 like DataComp's, with a few missing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

EN_WORDS = ("a photo of a red car on the street", "two dogs playing in the park", "a bowl of fresh fruit on a wooden table",
            "mountain landscape at sunset with clouds", "a woman riding a bicycle in the city", "close up of a yellow flower",
            "the old church in the village square", "a cat sleeping on a sofa", "boats in the harbour at night")
OTHER_LANGS = ("une photo d'une voiture rouge dans la rue", "zwei Hunde spielen im Park", "un cuenco de fruta fresca sobre la mesa",
               "paesaggio di montagna al tramonto con nuvole", "кошка спит на диване", "公园里玩耍的两只狗")
SHORT = ("img", "photo 1", "DSC_0042", "")


def random_uids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype(np.uint64)
    raw[:, 0] |= rng.integers(0, 2, size=n, dtype=np.uint64) << np.uint64(63)
    return [f"{int(a):016x}{int(b):016x}" for a, b in raw]


def sizes_and_scores(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image sizes (tiny, odd and extreme-aspect ones included) and float32 CLIP B/32 and L/14 scores."""
    side = rng.choice([64, 150, 199, 200, 256, 320, 512, 640, 1024], size=n)
    aspect = rng.choice([1.0, 1.33, 1.5, 2.0, 3.0, 3.01, 5.0], size=n, p=[0.4, 0.2, 0.15, 0.1, 0.05, 0.05, 0.05])
    width = side.astype(np.int64)
    height = np.round(side * aspect).astype(np.int64)
    swap = rng.random(n) < 0.5
    width, height = np.where(swap, height, width), np.where(swap, width, height)
    b32 = rng.normal(0.27, 0.05, n).astype(np.float32)
    l14 = (b32 * 0.9 + rng.normal(0.0, 0.02, n)).astype(np.float32)
    return width, height, b32, l14


def generate_metadata(n: int, seed: int = 0, url_prefix: str = "http://127.0.0.1:1/img/", null_rate: float = 0.01) -> pa.Table:
    """n rows of DataComp-schema metadata (uid, url, text, original_width, original_height, clip scores, sha256)."""
    rng = np.random.default_rng(seed)
    uids = random_uids(rng, n)
    kind = rng.choice(4, size=n, p=[0.7, 0.15, 0.1, 0.05])
    en = rng.integers(0, len(EN_WORDS), n)
    other = rng.integers(0, len(OTHER_LANGS), n)
    short = rng.integers(0, len(SHORT), n)
    texts: list[str | None] = []
    for i in range(n):
        k = kind[i]
        if k == 0:
            texts.append(EN_WORDS[en[i]])
        elif k == 1:
            texts.append(OTHER_LANGS[other[i]])
        elif k == 2:
            texts.append(SHORT[short[i]])
        else:
            texts.append(None)
    width, height, b32, l14 = sizes_and_scores(rng, n)
    mask_null = rng.random(n) < null_rate
    b32_arr = pa.array(b32, mask=mask_null)
    l14_arr = pa.array(l14, mask=rng.random(n) < null_rate)
    w_arr = pa.array(width, mask=rng.random(n) < null_rate / 2)
    return pa.table({
        "uid": pa.array(uids, pa.string()),
        "url": pa.array([f"{url_prefix}{u}.jpg" for u in uids], pa.string()),
        "text": pa.array(texts, pa.string()),
        "original_width": w_arr,
        "original_height": pa.array(height),
        "clip_b32_similarity_score": b32_arr,
        "clip_l14_similarity_score": l14_arr,
        "sha256": pa.array([f"{i:064x}" for i in range(n)], pa.string()),
    })
