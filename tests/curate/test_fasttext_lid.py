"""`--fasttext-model`: DataComp's language rule with a real fastText model file.

`lid.176.bin` cannot be downloaded here and fasttext-predict cannot train, so the model is a tiny
handmade one (tests/curate/fasttext_model.py) that fasttext-predict loads like any other `.bin`.
"""

import json
import subprocess
import sys
from collections import Counter

import fasttext
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.subset import read_subset
from curate.uids import uids_to_pairs

from tests.curate.fasttext_model import write_supervised_model

EN = ["a photo of a red car on the street", "two dogs playing in the park", "the old church in the village square",
      "a bowl of fresh fruit on the table", "boats in the harbour at night"]
FR = ["une photo d une voiture rouge dans la rue", "deux chiens jouent dans le parc", "la vieille eglise sur la place du village",
      "un bol de fruits frais sur la table", "des bateaux dans le port la nuit"]
# Captions the model never saw, with their expected language (unknown words count for nothing).
MORE = {"the red car and two dogs near the church": "en", "une voiture rouge pres de la vieille eglise": "fr",
        "a\ndog in the\npark today": "en", "two dogs": "en", "deux chiens dans la rue": "fr"}


@pytest.fixture(scope="module")
def lid_model(tmp_path_factory):
    """en/fr model: each word points to the languages it occurs in, in proportion ("photo", "village": both)."""
    counts: dict[str, Counter] = {}
    for lang, captions in (("en", EN), ("fr", FR)):
        for caption in captions:
            for word in caption.split():
                counts.setdefault(word, Counter())[lang] += 1
    weights = {w: {lang: n / sum(c.values()) for lang, n in c.items()} for w, c in counts.items()}
    return write_supervised_model(tmp_path_factory.mktemp("lid") / "lid.bin", ["en", "fr"], weights)


def test_handmade_model_is_a_fasttext_model(lid_model):
    model = fasttext.load_model(str(lid_model))
    expected = {**{t: "en" for t in EN}, **{t: "fr" for t in FR}, **MORE}
    for text, lang in expected.items():
        labels, probs = model.predict(text.replace("\n", " "))
        assert labels == (f"__label__{lang}",), text
        assert 0.5 < probs[0] <= 1.0
    labels, probs = model.predict("deux chiens", k=2)
    assert labels == ("__label__fr", "__label__en") and probs[0] > probs[1]


def test_basic_with_a_fasttext_model(tmp_path, lid_model):
    texts = EN + FR + list(MORE)
    uids = [f"{i + 1:032x}" for i in range(len(texts))]
    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"uid": uids, "text": texts, "original_width": [300] * len(texts), "original_height": [300] * len(texts)}),
                   tmp_path / "pool" / "m.parquet")
    out = subprocess.run([sys.executable, "-m", "curate.cli", "run", "--pool", str(tmp_path / "pool"), "--filter", "basic",
                          "--fasttext-model", str(lid_model), "--output", str(tmp_path / "out"), "--processes", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    model = fasttext.load_model(str(lid_model))
    # DataComp's get_fasttext_language: newlines replaced by spaces, top label
    langs = [model.predict(t.replace("\n", " "))[0][0].split("__label__")[1] for t in texts]
    assert langs == ["en"] * len(EN) + ["fr"] * len(FR) + list(MORE.values())
    want = [u for u, t, lang in zip(uids, texts, langs) if lang == "en" and len(t.split()) > 2 and len(t) > 5]
    assert 0 < len(want) < len(texts)
    assert uids[texts.index("a\ndog in the\npark today")] in want and uids[texts.index("two dogs")] not in want
    assert np.array_equal(read_subset(tmp_path / "out" / "subset.npy"), np.sort(uids_to_pairs(want)))
    cache = pq.read_table(tmp_path / "pool" / "columns" / "language" / "metadata-m.parquet")
    assert cache.column("language").to_pylist() == langs
    # the scores are this model's (the packaged lid.176.ftz would agree on these languages, not on the scores)
    scores = [model.predict(t.replace("\n", " "))[1][0] for t in texts]
    assert np.allclose(cache.column("language_score").to_numpy(), scores, atol=1e-6)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["language_models"]["language"]["file"] == "lid.bin"  # the model given, named with its hash
    assert stats["kept"] == len(want)
