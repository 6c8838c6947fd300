"""The training loop: DataComp's protocol for an exact number of samples, restartable at any checkpoint.

The budget: `steps = ceil(samples_seen / global_batch)` and the last step is trimmed to the remainder, so the
run sees exactly `samples_seen` samples and the cosine schedule reaches its end on the last step. DataComp's
wrapper instead splits the budget into 5 open_clip "epochs" of ceil(samples / 5 / batch) full batches, which
overshoots (by 0.004% at xlarge); a trimmed batch keeps the schedule and the count exact, and is one step out
of thousands. When the trimmed batch does not divide by the number of ranks, ranks differ by one sample and
the loss is weighted so DDP's gradient average still equals the gradient of the global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint, distributed, logs, plots, provenance
from . import model as model_lib
from .data import Position, make_loader, resolve_shards
from .loss import make_loss, split_batch
from .pixels import Pixels
from .scales import Scale
from .tensorboard import TensorBoardLog

log = logging.getLogger("train")


@dataclasses.dataclass
class Options:
    """One run: the scale (possibly with overrides) and how to execute it."""

    scale: Scale
    data: str
    output: Path
    resume: str | None = None
    precision: str | None = None  # None: the scale's
    workers: int | None = None  # loader processes per rank; None: the checkpoint's on resume, else default_workers
    seed: int = 0
    batch_size: int | None = None  # per-rank batch of one forward pass; global: x accum_freq x ranks (non-standard)
    samples: int | None = None  # override of samples seen (non-standard; tests and demos)
    checkpoint_every: int | None = None  # steps; None: five checkpoints per run, as DataComp saves
    device: str | None = None
    mix: int = 4
    progress: bool = True
    log_every: int | None = None  # steps per JSONL record (averaged over them); None: 1 on CPU, 10 on a GPU
    keep: int | None = None  # newest step checkpoints kept; None: all (as DataComp)
    accum_freq: int = 1  # micro-batches per step; same gradients as one pass, so not non-standard
    report_to: tuple[str, ...] = ()  # "tensorboard": event files under RUN/tensorboard (reporting only)
    # beyond DataComp (off by default; recorded as non-standard)
    model: str | None = None  # any open_clip model name instead of the scale's
    grad_checkpointing: bool | None = None
    patch_dropout: float | None = None  # FLIP
    image_size: int | None = None  # CLIPA's reduced resolution
    aug_scale: tuple[float, float] | None = None  # random-resized-crop scale
    re_prob: float | None = None  # random erasing probability
    siglip: bool = False
    compile: bool = False

    def non_standard(self) -> dict:
        """Options that depart from DataComp's protocol for the scale, recorded in info.json and logs."""
        out = {}
        if self.batch_size is not None:  # per optimizer step: what changes the protocol (accumulation does not)
            out["batch_size_per_rank"] = self.batch_size * self.accum_freq
        if self.samples is not None:
            out["samples_seen"] = self.samples
        if self.precision is not None and self.precision != self.scale.precision:
            out["precision"] = self.precision
        if self.model is not None and self.model != self.scale.model:
            out["model"] = self.model
        for name in ("patch_dropout", "image_size", "aug_scale", "re_prob"):
            if getattr(self, name) is not None:
                out[name] = list(v) if isinstance(v := getattr(self, name), tuple) else v
        if self.siglip:
            out["loss"] = "siglip"
        if self.compile:
            out["torch_compile"] = True
        return out

    def equivalent(self) -> dict:
        """Options that trade memory for time but give the standard run's gradients (recorded, not non-standard).

        Gradient checkpointing recomputes each block's forward in the backward pass: the same gradients (a test
        checks), a third more compute and much less activation memory. DataComp turned it on to fit its
        per-GPU batch; a GPU with the memory to spare may turn it off and stay on the protocol.
        """
        out = {"accum_freq": self.accum_freq} if self.accum_freq > 1 else {}
        if self.grad_checkpointing is not None and self.grad_checkpointing != self.scale.grad_checkpointing:
            out["grad_checkpointing"] = self.grad_checkpointing
        return out

    def uses_grad_checkpointing(self) -> bool:
        return self.scale.grad_checkpointing if self.grad_checkpointing is None else self.grad_checkpointing

    def aug_cfg(self) -> dict:
        cfg = {}
        if self.aug_scale is not None:
            cfg["scale"] = tuple(self.aug_scale)
        if self.re_prob is not None:  # open_clip only applies random erasing through timm's transforms
            cfg.update(re_prob=self.re_prob, use_timm=True)
        return cfg


def autocast(precision: str, device: torch.device):
    """The autocast context for a precision; 'amp' is fp16 with a grad scaler on GPUs."""
    if precision == "amp" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if precision == "amp_bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


FEATURES = ("image_features", "text_features")


def forward_backward(model, loss_fn, images, texts, sizes, world, precision="fp32", scaler=None, accum_freq=1):
    """Loss of this rank's share of the global batch, and its gradients (averaged over ranks by DDP).

    The local loss is weighted by world_size * n_rank / n_global so that DDP's plain average of gradients is
    the gradient of the global batch's loss even when ranks hold different numbers of samples. Returns the
    unweighted local loss, detached.

    With accum_freq K > 1 the share runs as K micro-batches, as open_clip_train's --accum-freq does: a no-grad
    pass caches every micro-batch's features, then each micro-batch is recomputed with grad and the loss of the
    whole share is taken with the others' cached features, so only one micro-batch's activations are alive at
    a time. Unlike open_clip, the logit scale and bias take their gradient in one pass, not K, and each
    recomputation replays its cached pass's RNG (same patch dropout): the gradients are the whole batch's.
    """
    device = images.device
    weight = world.world_size * sizes[world.rank] / sum(sizes)
    k = max(1, min(accum_freq, min(sizes)))  # the same on every rank: the loss's gathers must pair up
    chunks = list(zip(images.tensor_split(k), texts.tensor_split(k)))
    cached, rngs = _cache_features(model, chunks, precision) if k > 1 else (None, None)
    for j, (chunk_images, chunk_texts) in enumerate(chunks):
        last = j == k - 1
        with contextlib.nullcontext() if last else _no_sync(model):
            with _replay(rngs[j] if rngs else None, device), autocast(precision, device):
                out = model(chunk_images, chunk_texts)
                features = [out[key] if cached is None else
                            torch.cat(cached[key][:j] + [out[key]] + cached[key][j + 1:]) for key in FEATURES]
                scale, bias = out["logit_scale"], out.get("logit_bias")
                if not last:  # their gradient is taken once, in the last pass (DDP expects every parameter there)
                    scale, bias = scale.detach(), None if bias is None else bias.detach()
                loss = loss_fn(*features, scale, bias, sizes=sizes)
            _backward(loss * weight, scaler)
    return loss.detach()


def _backward(loss, scaler):
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()


def _cache_features(model, chunks, precision):
    """Every micro-batch's features without grad, and the RNG state each forward started from."""
    device = chunks[0][0].device
    cached, rngs = {key: [] for key in FEATURES}, []
    with torch.no_grad(), autocast(precision, device):
        for images, texts in chunks:
            rngs.append(_rng_state(device))
            out = model(images, texts)
            for key in FEATURES:
                cached[key].append(out[key])
    return cached, rngs


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def _replay(state: tuple | None, device: torch.device):
    """Run from a saved RNG state (the recomputed forward draws the cached one's dropout), then restore the RNG."""
    if state is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def _no_sync(model):
    """DDP's no_sync (around forward and backward) for the passes before the last: one gradient reduction a step."""
    return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()


def global_loss(local_loss: torch.Tensor, sizes: list[int], world) -> float:
    """The global batch's loss from every rank's local loss (a sample-weighted mean)."""
    value = local_loss.float() * (sizes[world.rank] / sum(sizes))
    if world.distributed:
        dist.all_reduce(value)
    return float(value)


def _unwrap(m):
    return m.module if hasattr(m, "module") else m


def default_log_every(device: torch.device) -> int:
    """Steps per log record when --log-every is not given: 1 on a CPU, 10 on a GPU.

    A record reads the loss, which waits for the GPU's queued work. Between records the host runs ahead (the
    fused AdamW takes the grad scaler's inf check on the GPU, so nothing else waits): the next batch's copy
    and the next step's launches are queued while the current step runs.
    """
    return 1 if device.type == "cpu" else 10


def default_workers(device: torch.device, world) -> int:
    """Loader processes per rank when --workers is not given: on a GPU, this rank's share of the CPUs less one
    for the training process itself (at most 16); on a CPU, 4 (open_clip's default), or the usable cores when
    fewer (more workers than cores only slow the run, and torch warns about it).

    A GPU eats samples several times faster than a worker decodes them (about 300-400 a second per core at
    224 px), so a fixed 4 would leave it waiting.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if device.type == "cpu":
        return min(4, cpus)
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world.world_size))
    return max(1, min(16, cpus // max(1, local_ranks) - 1))


def _resolve_precision(opts: Options, device: torch.device) -> str:
    precision = opts.precision or opts.scale.precision
    if precision == "amp" and device.type != "cuda":
        log.warning("precision amp (fp16) needs a GPU; training in fp32 on %s", device)
        precision = "fp32"
    return precision


def run(opts: Options) -> dict:
    """Train; returns a summary (steps, samples seen, skipped samples, paths)."""
    world = distributed.init(opts.device)
    try:
        return _run(opts, world)
    finally:
        distributed.shutdown()


def _run(opts: Options, world: distributed.World) -> dict:
    scale = opts.scale
    if opts.samples is not None:
        scale = scale.replace(samples_seen=opts.samples)
    if opts.batch_size is not None:  # open_clip's meaning: the batch of one forward pass, of one rank
        scale = scale.replace(global_batch=opts.batch_size * opts.accum_freq * world.world_size)
    if opts.model is not None:
        scale = scale.replace(model=opts.model)
    if scale.global_batch % world.world_size:
        raise ValueError(f"global batch {scale.global_batch} does not divide over {world.world_size} ranks")
    if scale.samples_seen < 1:
        raise ValueError("samples seen must be positive")
    local_batch = scale.global_batch // world.world_size
    steps = scale.steps
    last_batch = scale.samples_seen - (steps - 1) * scale.global_batch
    if last_batch < world.world_size:  # a rank with no sample cannot run the model's forward
        raise ValueError(f"the last step holds {last_batch} samples, fewer than the {world.world_size} ranks; "
                         f"choose --samples so every rank gets at least one")
    if opts.siglip and last_batch % world.world_size:
        raise ValueError(f"with --siglip the last batch ({last_batch} samples) must divide over {world.world_size} ranks; "
                         f"choose --samples so it does")
    every = opts.checkpoint_every or max(1, math.ceil(steps / 5))
    device = world.device
    precision = _resolve_precision(opts, device)
    run_dir = Path(opts.output)

    shards = resolve_shards(opts.data)  # raises DataError for missing/empty data before any work
    # what the shards hold (a subset's sha256, or their uids' multiset hash): `evaluate bundle` checks it
    source = provenance.data_source(opts.data, shards) if world.is_main else None

    torch.manual_seed(opts.seed)
    random.seed(opts.seed)
    np.random.seed(opts.seed % 2**32)
    model, preprocess, tokenizer = model_lib.create(
        scale.model, device, grad_checkpointing=opts.uses_grad_checkpointing(), patch_dropout=opts.patch_dropout,
        image_size=opts.image_size, aug_cfg=opts.aug_cfg(), siglip=opts.siglip)
    optimizer = model_lib.optimizer(model, scale, fused=True if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler("cuda") if precision == "amp" else None
    from open_clip_train.scheduler import cosine_lr

    schedule = cosine_lr(optimizer, scale.lr, scale.warmup, steps)
    loss_fn = make_loss(opts.siglip, rank=world.rank, world_size=world.world_size)

    step, samples_seen = 0, 0
    position = None
    rng = None
    resume_from = checkpoint.resolve(run_dir, opts.resume)
    if resume_from is not None:
        state = checkpoint.load_for_resume(resume_from)
        _check_compatible(state, scale, opts, world)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, samples_seen = int(state["step"]), int(state["samples_seen"])
        position = Position.from_dict(state["data"][world.rank])
        rng = state["rng"][world.rank]  # restored once the loader has drawn its base seed (below)
        del state

    log_every = opts.log_every or default_log_every(device)
    workers = opts.workers
    if workers is None:
        workers = position.num_workers if position is not None else default_workers(device, world)
    if position is None:
        position = Position(workers)
    position.check_workers(workers)  # before anything is written

    ddp_model = model
    if world.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if opts.compile:
        ddp_model = torch.compile(ddp_model)

    info = {
        "scale": scale.name,
        "protocol": dataclasses.asdict(scale),
        "steps": steps,
        "data": opts.data,
        "data_source": source,
        "shards": len(shards),
        "seed": opts.seed,
        "precision": precision,
        "world_size": world.world_size,
        "batch_per_rank": local_batch,
        "micro_batch_per_rank": math.ceil(local_batch / opts.accum_freq),
        "grad_checkpointing": opts.uses_grad_checkpointing(),
        "workers": workers,
        "checkpoint_every": every,
        "keep": opts.keep,
        "device": str(device),
        "non_standard": opts.non_standard(),
        "equivalent_options": opts.equivalent(),
        "versions": logs.versions(),
        "command": logs.command_line(),
        "resumed_from": str(resume_from) if resume_from else None,
    }
    step_log = board = None
    if world.is_main:
        logs.write_info(run_dir, info)
        step_log = logs.StepLog(run_dir, resume_step=step if resume_from is not None else None)
        if "tensorboard" in opts.report_to:
            board = TensorBoardLog(run_dir, resume_step=step if resume_from is not None else None)
        opening = {"event": "start", "step": step, "samples_seen": samples_seen,
                   "non_standard": info["non_standard"], "equivalent_options": info["equivalent_options"]}
        if resume_from is not None:
            opening.update(event="resume", checkpoint=str(resume_from))
        step_log.write(opening)
        if info["non_standard"]:
            log.warning("non-standard run (beyond DataComp's protocol): %s", info["non_standard"])

    flops = model_lib.train_flops_per_sample(scale.model, opts.patch_dropout or 0.0, opts.image_size)
    peak = model_lib.peak_flops(device)
    start = time.time()
    if step < steps:
        pixels = Pixels(preprocess, uint8=device.type != "cpu")  # uint8 from the workers, normalised on the GPU
        loader = make_loader(shards, local_batch, pixels, tokenizer, opts.seed, world.rank, workers,
                             position, pin_memory=device.type == "cuda", mix=opts.mix)
        batches = iter(loader)
        if rng is not None:
            # iter() drew the loader's base seed from torch's global RNG, which the unbroken run did at step 0,
            # before the checkpoint's state: restored only now, the RNG continues exactly where it was saved
            # (else dropout and --patch-dropout masks, and the next checkpoints' RNG, differ from that run's)
            checkpoint.set_rng_state(rng, device)
        bar = None
        if world.is_main and opts.progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=step, unit="step", dynamic_ncols=True)
        model.train()
        window = {"start": time.perf_counter(), "wait": 0.0, "samples": 0, "steps": 0}
        while step < steps:
            n_global = min(scale.global_batch, scale.samples_seen - step * scale.global_batch)
            sizes = split_batch(n_global, world.world_size)
            asked = time.perf_counter()
            batch = next(batches)
            window["wait"] += time.perf_counter() - asked
            position.consume(batch)
            n = sizes[world.rank]
            images = pixels.to_model(batch["images"][:n].to(device, non_blocking=True))
            texts = batch["texts"][:n].to(device, non_blocking=True)

            lr = schedule(step)
            optimizer.zero_grad(set_to_none=True)
            local = forward_backward(ddp_model, loss_fn, images, texts, sizes, world, precision, scaler,
                                     opts.accum_freq)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            samples_seen += n_global
            window["samples"] += n_global
            window["steps"] += 1
            if step % log_every == 0 or step == steps:
                # the loss reduction synchronises with the device, so the window's time is real
                loss = global_loss(local, sizes, world)
                elapsed = time.perf_counter() - window["start"]
                rate = window["samples"] / elapsed
                if step_log is not None:
                    record = {
                        "step": step, "samples_seen": samples_seen, "loss": loss, "lr": lr,
                        "logit_scale": float(model.logit_scale.detach().exp()),
                        "samples_per_s": rate, "samples_per_s_per_gpu": rate / world.world_size,
                        "data_wait": window["wait"] / elapsed,
                        "mfu": (flops * rate / (peak * world.world_size)) if flops and peak else None,
                        "step_time_s": elapsed / window["steps"],
                    }
                    step_log.write(record)
                    if board is not None:
                        board.write(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
                window = {"start": time.perf_counter(), "wait": 0.0, "samples": 0, "steps": 0}
            if bar is not None:
                bar.update(1)
            if step % every == 0 or step == steps:
                saving = time.perf_counter()
                removed = _save(run_dir, step, samples_seen, steps, model, optimizer, scaler, position, scale, opts,
                                world)
                if step_log is not None:
                    step_log.write({"event": "checkpoint", "step": step, "samples_seen": samples_seen,
                                    "path": str(checkpoint.step_path(run_dir, step)),
                                    "removed": [str(p) for p in removed]})
                    plots.write_training_plot(run_dir)
                    if board is not None:
                        board.flush()
                window["start"] += time.perf_counter() - saving  # checkpoint time is not training throughput
        if bar is not None:
            bar.close()
        del batches, loader

    skipped = _gather_skipped(position, world)
    summary = {"steps": step, "samples_seen": samples_seen, "skipped": skipped,
               "final": str(checkpoint.final_path(run_dir)), "wall_s": time.time() - start}
    if world.is_main:
        checkpoint.save({"state_dict": model.state_dict(), "model": scale.model, "scale": scale.name,
                         "step": step, "samples_seen": samples_seen, "options": opts.non_standard()},
                        checkpoint.final_path(run_dir))
        info.update({"finished": True, "samples_seen": samples_seen, "steps_done": step, "skipped": skipped})
        logs.write_info(run_dir, info)
        step_log.write({"event": "end", **summary})
        step_log.close()
        plots.write_training_plot(run_dir)
        if board is not None:
            board.close()
    distributed.barrier(world)
    return summary


def _save(run_dir, step, samples_seen, steps, model, optimizer, scaler, position, scale, opts, world) -> list[Path]:
    """Gather every rank's RNG and data position; rank 0 writes one whole checkpoint, then prunes older ones.

    Returns the checkpoints `--keep` removed.
    """
    rngs = distributed.all_gather_object(checkpoint.rng_state(world.device), world)
    positions = distributed.all_gather_object(position.to_dict(), world)
    removed = []
    if world.is_main:
        checkpoint.save({
            "format": checkpoint.FORMAT,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "samples_seen": samples_seen,
            "steps": steps,
            "scale": dataclasses.asdict(scale),
            "seed": opts.seed,
            "options": opts.non_standard(),
            "world_size": world.world_size,
            "rng": [_cpu(r) for r in rngs],
            "data": positions,
        }, checkpoint.step_path(run_dir, step))
        if opts.keep is not None:  # only now: the new checkpoint is whole on disk
            removed = checkpoint.prune(run_dir, opts.keep, step)
    distributed.barrier(world)
    return removed


def _cpu(rng: dict) -> dict:
    return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in rng.items()}


def _check_compatible(state: dict, scale: Scale, opts: Options, world) -> None:
    """A resumed run must be the same run: same protocol, seed and number of ranks."""
    problems = []
    if state.get("format") != checkpoint.FORMAT:
        problems.append("not a training checkpoint of this trainer")
    if state.get("scale") != dataclasses.asdict(scale):
        problems.append(f"its protocol {state.get('scale')} differs from this run's {dataclasses.asdict(scale)}")
    if state.get("seed") != opts.seed:
        problems.append(f"it was trained with --seed {state.get('seed')}, not {opts.seed}")
    if state.get("options") != opts.non_standard():
        problems.append(f"its options {state.get('options')} differ from this run's {opts.non_standard()}")
    if state.get("world_size") != world.world_size:
        problems.append(f"it was trained on {state.get('world_size')} ranks, not {world.world_size}")
    if problems:
        raise ValueError("cannot resume: " + "; ".join(problems))


def _gather_skipped(position: Position, world) -> dict:
    total: dict[str, int] = {}
    for counts in distributed.all_gather_object(position.skipped(), world):
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    return total
