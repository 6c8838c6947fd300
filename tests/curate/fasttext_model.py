"""A handmade fastText supervised model (`.bin`), written without training.

The installed `fasttext-predict` can load and predict but not train, and the tests cannot download
`lid.176.bin`; so the tests write a tiny model file themselves, byte for byte in fastText 0.9.x's format
(`FastText::saveModel`, src/fasttext.cc):

    int32 magic (793712314), int32 version (12)
    Args        (src/args.cc `Args::save`): int32 dim, ws, epoch, minCount, neg, wordNgrams, loss, model,
                bucket, minn, maxn, lrUpdateRate; float64 t
    Dictionary  (src/dictionary.cc `Dictionary::save`): int32 size, nwords, nlabels; int64 ntokens,
                pruneidx_size; per entry: the string, a NUL byte, int64 count, int8 type (0 word, 1 label);
                then pruneidx_size (int32, int32) pairs
    bool quant_input, then the input matrix  (src/densematrix.cc `DenseMatrix::save`: int64 m, int64 n,
                float32 data, row-major), nwords + bucket rows
    bool qout, then the output matrix, nlabels rows

Words come before labels in the dictionary (a label's id is `nwords + i`). The model predicts by
averaging the input rows of a line's words (the end-of-line token `</s>` included: `predict` appends a
newline), multiplying by the output matrix and taking a softmax. With `dim = len(labels)`, a word's row
set to its label weights and the output matrix a scaled identity, a caption scores highest for the label
its known words point to. minn = maxn = 0 and wordNgrams = 1 mean no char or word n-grams, so bucket = 0
(no hashed rows) and unknown words simply contribute nothing.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = 793712314
VERSION = 12
EOS = "</s>"
LABEL_PREFIX = "__label__"
LOSS_SOFTMAX = 3  # loss_name: hs = 1, ns = 2, softmax = 3, ova = 4
MODEL_SUP = 3  # model_name: cbow = 1, sg = 2, sup = 3
WORD, LABEL = 0, 1  # entry_type


def write_supervised_model(
    path,
    labels: list[str],
    word_label_weights: dict[str, dict[str, float]],
    dim: int | None = None,
    scale: float = 8.0,
) -> Path:
    """Write a fastText supervised model that classifies by the words' label weights.

    `labels` are bare ("en") or prefixed ("__label__en"); `word_label_weights` maps a word to
    {label: weight}. `dim` defaults to (and must be at least) the number of labels: label i is
    dimension i, word rows hold their weights there, the output matrix is `scale` times the identity.
    """
    bare = [lab[len(LABEL_PREFIX):] if lab.startswith(LABEL_PREFIX) else lab for lab in labels]
    if len(set(bare)) != len(bare) or not bare:
        raise ValueError(f"labels must be distinct and non-empty: {labels}")
    dim = len(bare) if dim is None else dim
    if dim < len(bare):
        raise ValueError(f"dim {dim} < {len(bare)} labels")
    index = {lab: i for i, lab in enumerate(bare)}

    words = [EOS] + [w for w in word_label_weights if w != EOS]
    for w in words:
        if not w or any(c.isspace() for c in w) or "\0" in w:
            raise ValueError(f"not a fastText token: {w!r}")
    input_matrix = np.zeros((len(words), dim), dtype=np.float32)
    for row, w in enumerate(words):
        for lab, weight in word_label_weights.get(w, {}).items():
            lab = lab[len(LABEL_PREFIX):] if lab.startswith(LABEL_PREFIX) else lab
            input_matrix[row, index[lab]] = weight
    output_matrix = np.zeros((len(bare), dim), dtype=np.float32)
    output_matrix[np.arange(len(bare)), np.arange(len(bare))] = scale

    entries = [(w, 1, WORD) for w in words] + [(LABEL_PREFIX + lab, 1, LABEL) for lab in bare]
    ntokens = sum(count for _, count, _ in entries)

    out = bytearray()
    out += struct.pack("<ii", MAGIC, VERSION)
    # Args: dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn, maxn, lrUpdateRate; t
    out += struct.pack("<12i", dim, 5, 5, 1, 5, 1, LOSS_SOFTMAX, MODEL_SUP, 0, 0, 0, 100)
    out += struct.pack("<d", 1e-4)
    # Dictionary: size, nwords, nlabels, ntokens, pruneidx_size (-1: not pruned), entries
    out += struct.pack("<iiiqq", len(entries), len(words), len(bare), ntokens, -1)
    for word, count, kind in entries:
        out += word.encode("utf-8") + b"\0" + struct.pack("<qb", count, kind)
    out += struct.pack("<?", False)  # quant_input
    out += struct.pack("<qq", *input_matrix.shape) + input_matrix.astype("<f4").tobytes()
    out += struct.pack("<?", False)  # qout
    out += struct.pack("<qq", *output_matrix.shape) + output_matrix.astype("<f4").tobytes()

    path = Path(path)
    path.write_bytes(bytes(out))
    return path
