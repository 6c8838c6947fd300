"""One pass over one shard: read the tar once, decode each image once, and feed every signal of the run.

The pass is split where a GPU wants it split:

- `prepare_shard` (CPU, any process; a loader worker on a GPU machine): streams the tar, decodes each
  image once, computes the CPU signals (phash, sha256, language), and preprocesses the decoded image
  once per distinct CLIP preprocessing (OpenAI's B/32 and L/14 share one) and tokenises each caption
  once per distinct tokenizer. It yields `ShardBatch`es of up to `batch_size` samples.
- the model side (one process) encodes the batches (`curate.signals.clip.launch`);
- `ShardResult` collects a shard's values and writes each output's column file whole
  (`curate.atomic`), after the shard's last batch.

Statuses: every sample with a uid gets a row in every output with `ok` or the reason: a decode
reason from `curate.signals.decode`, `no_image`, `no_text` (clip: the caption is missing; language:
nothing to identify), `unsupported_mode` (the decoded image cannot become the form a signal needs).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import atomic_path
from curate.signals.decode import OK, UNSUPPORTED_MODE, DecodeLimits, convert, decode_image
from curate.signals.phash import hash_pixels, luminance_source, pixels32, uint64_to_hex
from curate.signals.sha256 import sha256_hex
from curate.uids import UidError, hex_to_pair
from curate.wds import ReadReport, iter_samples

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
NO_IMAGE = "no_image"
NO_TEXT = "no_text"
PREPROCESS_FAILED = "preprocess_failed"
CPU_KINDS = ("phash", "sha256", "language")


@dataclass(frozen=True)
class Output:
    """One column file per shard: what a signal (or one clip model) writes."""

    kind: str  # phash | sha256 | language | clip | aesthetic
    folder: str  # POOL/columns/<folder>/
    spec: object = None  # ClipSpec for clip (the model) and aesthetic (the model feeding it)

    def path(self, columns_root: str, shard_id: int) -> Path:
        # The language folder is shared with the metadata-level cache (`metadata-<stem>.parquet`).
        name = f"shard-{shard_id:08d}.parquet" if self.kind == "language" else f"{shard_id:08d}.parquet"
        return storage.path(columns_root) / self.folder / name


@dataclass(frozen=True)
class PrepareJob:
    """Plain, picklable description of the CPU side of one shard's pass."""

    shard_id: int
    tar: str
    cpu: tuple[str, ...]  # which of phash, sha256, language
    transforms: tuple[tuple[str, str], ...] = ()  # (preprocess key, preprocess cfg as JSON)
    tokenizers: tuple[tuple[str, object], ...] = ()  # (tokenizer key, a ClipSpec that builds it)
    limits: DecodeLimits = DecodeLimits()
    fasttext_model: str | None = None
    batch_size: int = 64


@dataclass
class ShardBatch:
    """Up to batch_size consecutive samples of a shard, prepared for the models."""

    shard_id: int
    uids: list[str]
    cpu_values: dict[str, list] = field(default_factory=dict)  # column -> values
    cpu_status: dict[str, list] = field(default_factory=dict)  # cpu output kind -> statuses
    images: dict[str, tuple] = field(default_factory=dict)  # preprocess key -> (tensor (n, 3, H, W), rows)
    image_status: dict[str, list] = field(default_factory=dict)  # preprocess key -> status per row
    tokens: dict[str, tuple] = field(default_factory=dict)  # tokenizer key -> (tensor (n, ctx), rows)
    last: bool = False
    report: dict | None = None  # with the last batch: samples read, samples without uid, read error

    def pin_memory(self) -> "ShardBatch":  # called by DataLoader(pin_memory=True)
        self.images = {k: (t.pin_memory(), r) for k, (t, r) in self.images.items()}
        self.tokens = {k: (t.pin_memory(), r) for k, (t, r) in self.tokens.items()}
        return self


def sample_uid(sample) -> str | None:
    try:
        uid = json.loads(sample.files["json"]).get("uid")
        hex_to_pair(uid)
        return uid.lower()
    except (KeyError, ValueError, AttributeError, TypeError, UidError):
        return None


def sample_caption(sample) -> str | None:
    """The sample's caption: its .txt member (img2dataset writes it), else the json's `caption`."""
    if "txt" in sample.files:
        return sample.files["txt"].decode("utf-8", errors="replace")
    try:
        cap = json.loads(sample.files["json"]).get("caption")
    except (KeyError, ValueError, AttributeError, TypeError):
        return None
    return cap if isinstance(cap, str) else None


@lru_cache(maxsize=2)
def language_detector(fasttext_model: str | None):
    from curate.signals.language import LanguageDetector

    return LanguageDetector(fasttext_model)


def prepare_shard(job: PrepareJob) -> Iterator[ShardBatch]:
    """Read, decode once, compute CPU signals, preprocess and tokenise; batches in shard order."""
    import_torch = bool(job.transforms or job.tokenizers)
    if import_torch:
        import torch

        from curate.signals.clip import get_tokenizer, get_transform

        transforms = {k: get_transform(json.loads(cfg)) for k, cfg in job.transforms}
        tokenizers = {k: get_tokenizer(spec) for k, spec in job.tokenizers}
    forms_needed = (("L",) if "phash" in job.cpu else ()) + (("RGB",) if job.transforms else ())
    detector = language_detector(job.fasttext_model) if "language" in job.cpu else None
    report = ReadReport()
    no_uid = 0
    pending: list[tuple[str, bytes | None, str | None]] = []

    def make_batch(items, last: bool) -> ShardBatch:
        b = ShardBatch(job.shard_id, [u for u, _, _ in items], last=last)
        n = len(items)
        if "sha256" in job.cpu:
            b.cpu_values["sha256"] = [sha256_hex(d) if d is not None else None for _, d, _ in items]
            b.cpu_status["sha256"] = [OK if d is not None else NO_IMAGE for _, d, _ in items]
        if forms_needed:
            lum_rows, lum_pixels = [], []
            ph_status = [NO_IMAGE] * n
            prepared: dict[str, list] = {k: [] for k in transforms} if import_torch else {}
            pre_status: dict[str, list] = {k: [NO_IMAGE] * n for k in prepared}
            for i, (_, data, _) in enumerate(items):
                if data is None:
                    continue
                decoded = decode_image(data, job.limits, forms=())  # the one decode of this image
                if not decoded.ok:
                    ph_status[i] = decoded.status
                    for k in pre_status:
                        pre_status[k][i] = decoded.status
                    continue
                if "phash" in job.cpu:
                    try:
                        source = luminance_source(decoded.image)  # RGB and L as they are: no convert
                    except Exception:
                        ph_status[i] = UNSUPPORTED_MODE
                    else:
                        lum_pixels.append(pixels32(source))
                        lum_rows.append(i)
                if prepared:
                    try:
                        rgb = convert(decoded.image, "RGB")
                    except Exception:
                        for k in pre_status:
                            pre_status[k][i] = UNSUPPORTED_MODE
                        continue
                    for k, tf in transforms.items():
                        try:
                            prepared[k].append((i, tf(rgb)))
                            pre_status[k][i] = OK
                        except Exception:
                            pre_status[k][i] = PREPROCESS_FAILED
            if "phash" in job.cpu:
                hashes = [None] * n
                values = hash_pixels(np.stack(lum_pixels)) if lum_pixels else np.zeros(0, np.uint64)
                for i, h in zip(lum_rows, uint64_to_hex(values)):
                    hashes[i] = h
                    ph_status[i] = OK
                b.cpu_values["phash"] = hashes
                b.cpu_status["phash"] = ph_status
            for k, lst in prepared.items():
                rows = [i for i, _ in lst]
                t = torch.stack([x for _, x in lst]) if lst else torch.zeros(0)
                b.images[k] = (t, rows)
                b.image_status[k] = pre_status[k]
        if import_torch:
            rows = [i for i, (_, _, c) in enumerate(items) if c is not None]
            texts = [items[i][2] for i in rows]
            for k, tok in tokenizers.items():
                b.tokens[k] = (tok(texts) if texts else torch.zeros(0, dtype=torch.long), rows)
        if detector is not None:
            det = detector.detect([c for _, _, c in items])
            langs = det.column("language").to_pylist()
            b.cpu_values["language"] = langs
            b.cpu_values["language_score"] = det.column("language_score").to_pylist()
            b.cpu_status["language"] = [OK if lang is not None else NO_TEXT for lang in langs]
        return b

    for sample in iter_samples(job.tar, report):
        uid = sample_uid(sample)
        if uid is None:
            no_uid += 1  # cannot be keyed; counted in the stats, not in the columns
            continue
        data = next((sample.files[e] for e in IMAGE_EXTS if e in sample.files), None)
        pending.append((uid, data, sample_caption(sample) if (import_torch or detector) else None))
        if len(pending) >= job.batch_size:
            yield make_batch(pending, last=False)
            pending = []
    batch = make_batch(pending, last=True)
    batch.report = {"samples": report.samples, "samples_without_uid": no_uid, "read_error": report.error}
    yield batch


# ---- collecting a shard's values and writing its column files -------------------------------------------


def _fixed_list(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """(N, D) float16 rows as fixed_size_list<halffloat>[D]; rows not `valid` are null."""
    from curate.columns import embeddings_to_arrow

    arr = embeddings_to_arrow(values.astype(np.float16))
    if valid.all():
        return arr
    return pa.FixedSizeListArray.from_arrays(arr.values, type=arr.type, mask=pa.array(~valid))


class ShardResult:
    """A shard's rows for each output, filled batch by batch, written when the shard is done."""

    def __init__(self, shard_id: int, outputs: tuple[Output, ...], columns_root: str, clip_inputs: dict,
                 aesthetic=None, fasttext_model: str | None = None):
        """clip_inputs: clip output folder -> (preprocess key, tokenizer key, embedding width)."""
        self.shard_id = shard_id
        self.outputs = outputs
        self.columns_root = columns_root
        self.clip_inputs = clip_inputs
        self.aesthetic = aesthetic  # AestheticPredictor or None
        self.fasttext_model = fasttext_model
        self.uids: list[str] = []
        self.cpu_values: dict[str, list] = {}
        self.cpu_status: dict[str, list] = {}
        # clip folder -> pieces (offset, n, image rows, image features, text rows, text features) and statuses
        self.clip: dict[str, list] = {o.folder: [] for o in outputs if o.kind == "clip"}
        self.clip_status: dict[str, list] = {f: [] for f in self.clip}
        self.report: dict | None = None

    def add(self, batch: ShardBatch, encoded: dict[str, tuple]) -> None:
        """encoded: clip folder -> (image features (n_img, D) float32 or None, text features (n_txt, D) or None)."""
        offset = len(self.uids)
        self.uids.extend(batch.uids)
        for k, v in batch.cpu_values.items():
            self.cpu_values.setdefault(k, []).extend(v)
        for k, v in batch.cpu_status.items():
            self.cpu_status.setdefault(k, []).extend(v)
        for folder, pieces in self.clip.items():
            pkey, tkey, _ = self.clip_inputs[folder]
            img, txt = encoded[folder]
            img_rows = batch.images[pkey][1] if img is not None else []
            txt_rows = batch.tokens[tkey][1] if txt is not None else []
            pieces.append((offset, img_rows, img, txt_rows, txt))
            has_text = set(txt_rows)
            self.clip_status[folder].extend(s if s != OK else (OK if i in has_text else NO_TEXT)
                                            for i, s in enumerate(batch.image_status[pkey]))
        if batch.last:
            self.report = batch.report

    def _clip_arrays(self, folder: str):
        n = len(self.uids)
        width = self.clip_inputs[folder][2]
        img = np.zeros((n, width), np.float32)
        txt = np.zeros((n, width), np.float32)
        img_ok = np.zeros(n, bool)
        txt_ok = np.zeros(n, bool)
        for offset, img_rows, img_feat, txt_rows, txt_feat in self.clip[folder]:
            if img_feat is not None and len(img_rows):
                rows = offset + np.asarray(img_rows)
                img[rows] = img_feat
                img_ok[rows] = True
            if txt_feat is not None and len(txt_rows):
                rows = offset + np.asarray(txt_rows)
                txt[rows] = txt_feat
                txt_ok[rows] = True
        return img, txt, img_ok, txt_ok, self.clip_status[folder]

    def tables(self) -> dict[Output, pa.Table]:
        uid = pa.array(self.uids, pa.string())
        out: dict[Output, pa.Table] = {}
        clip_cache = {}
        for o in self.outputs:
            if o.kind in ("phash", "sha256"):
                out[o] = pa.table({"uid": uid, o.kind: pa.array(self.cpu_values.get(o.kind, []), pa.string()),
                                   "status": pa.array(self.cpu_status.get(o.kind, []), pa.string())})
            elif o.kind == "language":
                from curate.signals.text_columns import _DETECTOR_KEY, _detector_name

                t = pa.table({"uid": uid, "language": pa.array(self.cpu_values.get("language", []), pa.string()),
                              "language_score": pa.array(self.cpu_values.get("language_score", []), pa.float32()),
                              "status": pa.array(self.cpu_status.get("language", []), pa.string())})
                out[o] = t.replace_schema_metadata({_DETECTOR_KEY: _detector_name(self.fasttext_model).encode()})
            elif o.kind == "clip":
                img, txt, img_ok, txt_ok, status = clip_cache.setdefault(o.folder, self._clip_arrays(o.folder))
                both = img_ok & txt_ok
                score = np.where(both, (img * txt).sum(axis=1), np.nan).astype(np.float32)
                spec = o.spec
                out[o] = pa.table({
                    "uid": uid,
                    spec.score_column: pa.array(score, pa.float32(), mask=~both),
                    spec.img_column: _fixed_list(img, img_ok),
                    spec.txt_column: _fixed_list(txt, txt_ok),
                    "status": pa.array(status, pa.string()),
                })
        for o in self.outputs:
            if o.kind == "aesthetic":
                feed = o.spec
                if feed.folder in self.clip:  # the feeding embeddings were computed in this pass
                    img, _, img_ok, _, status = clip_cache.setdefault(feed.folder, self._clip_arrays(feed.folder))
                    stored = img.astype(np.float16)  # exactly what the clip column holds
                    statuses = [OK if s == NO_TEXT else s for s in status]
                    out[o] = aesthetic_table(uid, stored, img_ok, statuses, self.aesthetic)
                else:
                    out[o] = aesthetic_from_store(feed, self.columns_root, self.shard_id, self.aesthetic)
        return out

    def write(self) -> dict[str, dict]:
        """Write each output whole (temporary name, then rename); returns folder -> status counts."""
        counts = {}
        for o, table in self.tables().items():
            with atomic_path(o.path(self.columns_root, self.shard_id)) as tmp:
                pq.write_table(table, tmp)
            counts[o.folder] = dict(Counter(table.column("status").to_pylist()))
        return counts


def aesthetic_table(uid: pa.Array, stored: np.ndarray, img_ok: np.ndarray, statuses: list, predictor) -> pa.Table:
    from curate.signals.aesthetic import AESTHETIC_COLUMN

    scores = np.full(len(stored), np.nan, np.float32)
    if img_ok.any():
        scores[img_ok] = predictor.score(stored[img_ok])
    return pa.table({"uid": uid, AESTHETIC_COLUMN: pa.array(scores, pa.float32(), mask=~img_ok),
                     "status": pa.array(statuses, pa.string())})


def aesthetic_from_store(feed, columns_root: str, shard_id: int, predictor) -> pa.Table:
    """Aesthetic scores from a clip column file already in the store (no decode, no CLIP model)."""
    from curate.columns import embeddings_to_numpy

    path = Output("clip", feed.folder, feed).path(columns_root, shard_id)
    t = pq.ParquetFile(storage.arrow_source(path)).read(columns=["uid", feed.img_column, "status"])
    col = t.column(feed.img_column).combine_chunks()
    predictor.check_width(col.type.list_size, f"column {feed.img_column} in {path}")
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)
    dense = np.zeros((len(col), col.type.list_size), np.float16)
    if valid.any():
        dense[valid] = embeddings_to_numpy(col.filter(pa.array(valid)))
    statuses = [OK if s == NO_TEXT else s for s in t.column("status").to_pylist()]
    return aesthetic_table(t.column("uid").combine_chunks(), dense, valid, statuses, predictor)


__all__ = ["CPU_KINDS", "NO_IMAGE", "NO_TEXT", "Output", "PrepareJob", "ShardBatch", "ShardResult",
           "prepare_shard", "sample_caption", "sample_uid"]
