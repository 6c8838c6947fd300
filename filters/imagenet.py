"""DataComp's ImageNet-anchored baselines: text_based, image_based and image_based ∩ clip_score.

text_based
    English caption (fastText lid.176), and some word of `text.split()` whose first WordNet synset
    (`wordnet.synsets(word)[0].offset()`, nltk) is an ImageNet-21k class: DataComp's
    does_contain_text_entity. WordNet 3.0 and the synset list are read offline (filters.wordnet);
    `wordnet_ids: FILE` takes another list of `n01440764`-style ids.

image_based
    English caption of more than 1 fastText token and more than 5 characters (DataComp's caption_filter,
    which counts `len(fasttext.tokenize(text))`); then each sample's L/14 image embedding goes to the
    nearest (largest inner product) of the pool centroids, and the sample is kept when its centroid is the
    nearest centroid of some ImageNet target. Targets: ImageNet-1k image features (`targets_kind: image`,
    DataComp's rule: a .npy, or DataComp's five `in1k_clip_vit_l14_*.pt` by glob or comma list), or text
    embeddings of ImageNet class prompts (`targets_kind: text`, a stand-in labelled
    `image_based[text targets]`). Centroids: DataComp's `{scale}_centroids_l14.pt` (or a .npy) with
    `centroids: FILE`, for DataComp's subsets exactly. Without it they are trained here as DataComp's
    image_based_clustering.py does, on caption-filtered embeddings with faiss (20 iterations, seed 0), with
    two differences: k = pool rows / 128 up to 100,000 (DataComp: 100,000 at every scale, fitted to its
    12.8M-row small pool), and the training set is at most k x 64 of them chosen by uid hash (so the same on
    every partitioning) where DataComp takes all of them (small, medium) or a random 30% / 3% (large,
    xlarge) on 8 GPUs. Nearest centroids are found with faiss on the CPU, DataComp's with a float32 einsum
    on a GPU: a sample almost equidistant from two centroids may go either way.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.base import Filter, FilterConfigError, FilterResult, FileRequest, GatherRequest
from filters.datacomp import ClipScore
from filters.compose import AllOf
from filters.rules import char_count, embedding_matrix, fasttext_token_count, missing_text, not_language, python_words, uid_hash
from filters import wordnet as wn

# --------------------------------------------------------------------------------------------------------
# text_based
# --------------------------------------------------------------------------------------------------------


class TextBased(Filter):
    name = "text_based"
    description = (
        "English caption in which some word's first WordNet synset is an ImageNet-21k class (DataComp's "
        "text-based baseline; WordNet 3.0 and timm's ImageNet-21k synset list, offline)."
    )
    columns = ("text", "language")
    path_params = ("wordnet_ids",)

    def __init__(self, language: str = "en", wordnet_ids: str | None = None):
        self.language = language
        self.wordnet_ids = wordnet_ids
        self._synsets: frozenset | None = None

    def _ids_file(self) -> str:
        return self.wordnet_ids or wn.imagenet21k_file()

    def params(self) -> dict:
        out = {"language": self.language, "rule": "first WordNet synset of a text.split() word (DataComp)",
               "wordnet_ids": self.wordnet_ids or "ImageNet-21k (timm's imagenet21k_goog_synsets.txt)"}
        if self._synsets is not None:
            out.update({"synsets": len(self._synsets), **wn.wordnet_source()})
        return out

    def requests(self) -> list:
        return [FileRequest(self._ids_file(), "lines")] if self._synsets is None else []

    def bind(self, resolved: dict) -> "TextBased":
        if self._synsets is not None:
            return self
        try:
            offsets = wn.parse_wordnet_ids(resolved[FileRequest(self._ids_file(), "lines")], self._ids_file())
            wn.wordnet()  # fail here, once, when nltk or WordNet is missing
        except (ValueError, wn.WordNetUnavailable) as e:
            raise FilterConfigError(str(e)) from None
        bound = TextBased(self.language, self.wordnet_ids)
        bound._synsets = offsets
        return bound

    def apply(self, table: pa.Table) -> FilterResult:
        if self._synsets is None:
            raise FilterConfigError("text_based must be bound to its synset list first")
        text = table.column("text")
        rules = {
            "missing_caption": missing_text(text),
            "not_english": not_language(table.column("language"), self.language),
            "no_imagenet_class": ~wordnet_hits(text, self._synsets),
        }
        return FilterResult.from_rules(table.num_rows, rules)


def wordnet_hits(text: pa.ChunkedArray, synsets: frozenset) -> np.ndarray:
    """DataComp's does_contain_text_entity: some `text.split()` word's first synset is in `synsets`.

    Each distinct word is looked up once (nltk is per word; captions repeat words).
    """
    words, parent = python_words(text)
    uniq = pc.unique(words)
    offsets = wn.first_synset_offsets(uniq.to_pylist())
    good = np.array([offsets[w] in synsets for w in uniq.to_pylist()], dtype=bool)
    idx = np.asarray(pc.index_in(words, value_set=uniq).to_numpy(zero_copy_only=False))
    hits = np.zeros(len(text), dtype=bool)
    hits[parent[good[idx]]] = True
    return hits


# --------------------------------------------------------------------------------------------------------
# image_based: k-means over the pool, computed once by the runner
# --------------------------------------------------------------------------------------------------------


class CountRows:
    """Gather step: rows with a valid uid, and those of them with an embedding that pass the caption filter
    (the rows k-means may sample), summed over the partitions."""

    def __init__(self, column: str = "l14_img", caption: tuple[str, int, int] = ("en", 1, 5)):
        self.column, self.caption = column, caption
        self.columns = (column, "text", "language")

    def map(self, table: pa.Table) -> tuple[int, int]:
        present = ~np.asarray(pc.is_null(table.column(self.column)).to_numpy(zero_copy_only=False), dtype=bool)
        return table.num_rows, int((present & caption_ok(table, *self.caption)).sum())

    def reduce(self, parts: list[tuple[int, int]]) -> tuple[int, int]:
        return int(sum(p[0] for p in parts)), int(sum(p[1] for p in parts))


class KMeansSample:
    """Gather step: a uid-hash sample of `column`'s vectors from every partition, then faiss k-means on it.

    Every row with a vector gets hash h(uid, seed); partitions send the rows with h below a cutoff (a
    rate a little above sample/N), and the reduce keeps the `sample` smallest hashes: the same sample,
    in the same order, however the pool is partitioned.
    """

    def __init__(self, column: str, k: int, sample: int, rate: float, seed: int, niter: int,
                 caption: tuple[str, int, int] = ("en", 1, 5)):
        self.column, self.k, self.sample, self.rate, self.seed, self.niter = column, k, sample, rate, seed, niter
        self.caption = caption  # (language, tokens more than, chars more than): DataComp clusters caption-filtered rows
        self.columns = (column, "text", "language")

    def map(self, table: pa.Table):
        x, present = embedding_matrix(table.column(self.column))
        h = uid_hash(table.column("uid"), self.seed)
        sel = present & caption_ok(table, *self.caption)
        if self.rate < 1.0:
            sel = sel & (h < np.uint64(min(int(self.rate * 2.0**64), 2**64 - 1)))
        return h[sel], x[sel]

    def reduce(self, parts):
        hashes = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.uint64)
        if len(hashes) == 0:
            raise FilterConfigError(f"image_based: no row of the pool has a {self.column!r} embedding and an English caption")
        vectors = np.concatenate([p[1] for p in parts])
        order = np.argsort(hashes, kind="stable")[: self.sample]
        return train_kmeans(np.ascontiguousarray(vectors[order]), self.k, self.niter, self.seed)


def caption_rules(table: pa.Table, language: str, min_tokens: int, min_chars: int) -> dict[str, np.ndarray]:
    """DataComp's caption_filter: fastText English, more than `min_tokens` fastText tokens and `min_chars` characters."""
    text = table.column("text")
    return {
        "missing_caption": missing_text(text),
        "not_english": not_language(table.column("language"), language),
        "too_few_words": fasttext_token_count(text) <= min_tokens,
        "too_few_chars": char_count(text) <= min_chars,
    }


def caption_ok(table: pa.Table, language: str, min_tokens: int, min_chars: int) -> np.ndarray:
    ok = np.ones(table.num_rows, dtype=bool)
    for failed in caption_rules(table, language, min_tokens, min_chars).values():
        ok &= ~failed
    return ok


def train_kmeans(x: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """faiss k-means centroids (k, d), float32; k is capped at the number of points."""
    import faiss

    k = max(1, min(k, len(x)))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False,
                      max_points_per_centroid=max(1, -(-len(x) // k)), min_points_per_centroid=1)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(km.centroids, dtype=np.float32)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Index of the centroid with the largest inner product (DataComp's get_centroid_ids_gpu), via faiss."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    out = np.empty(len(x), dtype=np.int64)
    for i in range(0, len(x), batch):
        _, labels = index.search(np.ascontiguousarray(x[i : i + batch], dtype=np.float32), 1)
        out[i : i + batch] = labels[:, 0]
    return out


def auto_k(rows: int) -> int:
    return int(min(100_000, max(1, rows // 128)))


class ImageBased(Filter):
    name = "image_based"
    description = (
        "English caption of more than 1 fastText token and more than 5 characters; then keep samples whose nearest "
        "pool centroid is nearest to an ImageNet target. `targets`: ImageNet image features (.npy, or DataComp's "
        "in1k_clip_vit_l14_*.pt by glob or comma list), or with targets_kind: text, class-prompt text embeddings. "
        "`centroids`: DataComp's {scale}_centroids_l14.pt (or .npy); without it, faiss k-means over caption-filtered "
        "l14_img, k = rows/128 up to 100,000."
    )
    path_params = ("targets", "centroids")
    columns = ("text", "language", "l14_img")

    def __init__(self, targets: str | None = None, targets_kind: str = "image", k: int | str = "auto",
                 points_per_centroid: int = 64, niter: int = 20, seed: int = 0, column: str = "l14_img",
                 language: str = "en", min_words: int = 1, min_chars: int = 5, centroids: str | None = None):
        if not targets:
            raise FilterConfigError(
                "image_based needs `targets`: ImageNet-1k L/14 image features (targets_kind: image; a .npy, or DataComp's "
                "in1k_clip_vit_l14_*.pt), or ImageNet class-prompt text embeddings (targets_kind: text; `curate filters "
                "targets` writes one); in a recipe, or on the command line as --set image_based.targets=FILE")
        if targets_kind not in ("image", "text"):
            raise FilterConfigError(f"targets_kind must be image or text, got {targets_kind!r}")
        if not (k == "auto" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1)):
            raise FilterConfigError(f"k must be 'auto' or a positive integer, got {k!r}")
        for pname, v in (("points_per_centroid", points_per_centroid), ("niter", niter)):
            if not isinstance(v, int) or v < 1:
                raise FilterConfigError(f"{pname} must be a positive integer, got {v!r}")
        self.targets, self.targets_kind, self.k = str(targets), targets_kind, k
        self.centroids = str(centroids) if centroids else None
        self.points_per_centroid, self.niter, self.seed, self.column = points_per_centroid, niter, int(seed), column
        self.language, self.min_words, self.min_chars = language, min_words, min_chars
        self.columns = ("text", "language", column)
        self._targets: np.ndarray | None = None
        self._rows: int | None = None
        self._eligible: int | None = None  # rows with an embedding and a caption that passes the caption filter
        self._centroids: np.ndarray | None = None
        self._target_ids: np.ndarray | None = None

    # -- what the runner computes --
    def _copy(self) -> "ImageBased":
        new = ImageBased.__new__(ImageBased)
        new.__dict__.update(self.__dict__)
        return new

    def k_for(self, rows: int) -> int:
        return auto_k(rows) if self.k == "auto" else int(self.k)

    def _first_requests(self) -> list:
        """The targets, and either the given centroids or the pool's row count (to size the k-means)."""
        caption = (self.language, self.min_words, self.min_chars)
        second = (FileRequest(self.centroids, "matrix") if self.centroids
                  else GatherRequest(f"rows:{self.column}:{caption}", CountRows(self.column, caption)))
        return [FileRequest(self.targets, "matrix"), second]

    def _sample_request(self) -> GatherRequest:
        k = self.k_for(self._rows)
        sample = min(self._eligible, k * self.points_per_centroid)
        rate = 1.0 if sample >= self._eligible else min(1.0, 1.2 * sample / self._eligible + 1e-4)
        caption = (self.language, self.min_words, self.min_chars)
        key = f"kmeans:{self.column}:k={k}:sample={sample}:seed={self.seed}:niter={self.niter}:rows={self._rows}:{caption}"
        return GatherRequest(key, KMeansSample(self.column, k, sample, rate, self.seed, self.niter, caption))

    def requests(self) -> list:
        if self._target_ids is not None:
            return []
        if self._targets is None:
            return self._first_requests()
        return [self._sample_request()]

    def bind(self, resolved: dict) -> "ImageBased":
        if self._target_ids is not None:
            return self
        new = self._copy()
        if new._targets is None:
            targets_req, second = self._first_requests()
            if targets_req not in resolved or second not in resolved:
                return new
            new._targets = np.asarray(resolved[targets_req], dtype=np.float32)
            if self.centroids:
                return new._with_centroids(resolved[second], self.centroids)
            new._rows, new._eligible = resolved[second]
            if new._eligible == 0:
                raise FilterConfigError(f"image_based: no row of the pool has a {self.column!r} embedding and a caption "
                                        "that passes the caption filter, so there is nothing to cluster")
        req = new._sample_request()
        if req not in resolved:
            return new
        return new._with_centroids(resolved[req], f"the k-means over {self.column}")

    def _with_centroids(self, centroids, where: str) -> "ImageBased":
        centroids = np.asarray(centroids, dtype=np.float32)
        if centroids.shape[1] != self._targets.shape[1]:
            raise FilterConfigError(f"{self.targets}: targets have {self._targets.shape[1]} dimensions, "
                                    f"{where} {centroids.shape[1]}")
        self._centroids = centroids
        # DataComp's get_centroid_ids_gpu on the targets, then torch.unique
        self._target_ids = np.unique(nearest_centroid(self._targets, centroids))
        return self

    # -- reporting --
    def label(self) -> str:
        return "image_based[text targets]" if self.targets_kind == "text" else "image_based"

    def params(self) -> dict:
        out = {
            "targets": self.targets,
            "targets_kind": self.targets_kind,
            "variant": "ImageNet text-embedding targets (not DataComp's image features)" if self.targets_kind == "text"
                       else "ImageNet image-feature targets (DataComp)",
            "centroids": self.centroids or "faiss k-means over caption-filtered embeddings of this pool",
            "column": self.column, "language": self.language,
            "fasttext_tokens_more_than": self.min_words, "chars_more_than": self.min_chars,
        }
        if not self.centroids:
            out.update({"k": self.k, "points_per_centroid": self.points_per_centroid, "niter": self.niter, "seed": self.seed})
        if self._centroids is not None:
            out.update({"pool_rows": self._rows, "k_used": int(len(self._centroids)),
                        "target_clusters": int(len(self._target_ids)), "targets_rows": int(len(self._targets))})
        return out

    def apply(self, table: pa.Table) -> FilterResult:
        if self._target_ids is None:
            raise FilterConfigError("image_based must be bound to its pool centroids first")
        rules = caption_rules(table, self.language, self.min_words, self.min_chars)
        ok = np.ones(table.num_rows, dtype=bool)
        for m in rules.values():
            ok &= ~m
        x, present = embedding_matrix(table.column(self.column))
        if x.shape[1] and x.shape[1] != self._centroids.shape[1]:
            raise FilterConfigError(f"{self.column}: {x.shape[1]} dimensions, the centroids {self._centroids.shape[1]}")
        near = np.zeros(table.num_rows, dtype=bool)
        idx = np.flatnonzero(ok & present)
        if len(idx):
            near[idx] = np.isin(nearest_centroid(x[idx], self._centroids), self._target_ids)
        rules["missing_embedding"] = ~present
        rules["cluster_not_near_imagenet"] = ok & present & ~near
        return FilterResult.from_rules(table.num_rows, rules)


class ImageBasedClipScore(Filter):
    name = "image_based_clip_score"
    description = ("image_based ∩ clip_score (L/14, top 30% of the whole pool by default): DataComp's best "
                   "published baseline at medium scale and above.")
    path_params = ("targets", "centroids")
    columns = ("text", "language", "l14_img", "clip_l14_similarity_score")

    def __init__(self, targets: str | None = None, targets_kind: str = "image", k: int | str = "auto",
                 points_per_centroid: int = 64, niter: int = 20, seed: int = 0, arch: str = "l14",
                 fraction: float | None = 0.3, threshold: float | None = None, centroids: str | None = None,
                 _inner: AllOf | None = None):
        if _inner is None:
            clip = ClipScore(arch, fraction=None if threshold is not None else fraction, threshold=threshold)
            image = ImageBased(targets, targets_kind, k, points_per_centroid, niter, seed, centroids=centroids)
            _inner = AllOf([clip, image])  # the cheap step first; an intersection either way
        self.inner = _inner
        self.columns = _inner.columns

    def label(self) -> str:
        return f"image_based_clip_score[{' ∩ '.join(p.label() for p in self.inner.parts)}]"

    def params(self) -> dict:
        return {p.name: p.params() for p in self.inner.parts}

    def requests(self) -> list:
        return self.inner.requests()

    def bind(self, resolved: dict) -> "ImageBasedClipScore":
        return ImageBasedClipScore(_inner=self.inner.bind(resolved))

    def score_thresholds(self) -> list[tuple[str, float]]:
        return self.inner.score_thresholds()

    def apply(self, table: pa.Table) -> FilterResult:
        return self.inner.apply(table)
