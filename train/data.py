"""The webdataset loader: seeded resampled shards, a resumable position, corrupt samples skipped and counted.

Why not webdataset's own pipeline: its ResampledShards and shuffle buffer have no position that can be saved
and restored, so a killed run could not continue on the same samples. Here each DataLoader worker owns one
seeded stream (`ShardStream`) whose whole state -- its RNG, the shards it has open and how far into each it
has read, its skip counters -- is a few kilobytes of JSON sent along with every batch. The main process keeps
the state that came with the last batch it consumed from each worker; a checkpoint stores those, and a resumed
run restarts every worker exactly where the consumed batches left it. Shards are read with the same layout
rules as webdataset (`{key}.{ext}` members, a sample = consecutive members sharing a key).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import random
import tarfile
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image

from curate.signals.decode import PIXELS_ONLY, TOO_MANY_PIXELS, decode_image
from curate.wds import member_key

from .pixels import Pixels

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXT = "txt"
SKIP_REASONS = ("missing_image", "missing_caption", "corrupt_image", "too_many_pixels", "bad_caption",
                "corrupt_shard")


class DataError(RuntimeError):
    """The training data cannot be used (missing, empty, or without a single trainable sample)."""


# --------------------------------------------------------------------------------------------- shard lists

def _is_remote(url: str) -> bool:
    return url.startswith("pipe:") or "://" in url


def resolve_shards(spec: str) -> list[str]:
    """Expand `--data`: `::`-joined sources, each a folder (its *.tar), a brace pattern, a glob or one tar."""
    import braceexpand

    sources = [s for s in str(spec).split("::") if s.strip()]
    if not sources:
        raise DataError("no data given: --data needs a folder, a shard pattern or a .tar file")
    shards: list[str] = []
    for source in sources:
        source = source.strip()
        if _is_remote(source):
            shards.extend(braceexpand.braceexpand(source))
            continue
        path = Path(source)
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.tar"))
            if not found:
                raise DataError(f"data folder {source} holds no *.tar shards")
            shards.extend(found)
        elif "{" in source:
            expanded = list(braceexpand.braceexpand(source))
            missing = [u for u in expanded if not Path(u).is_file()]
            if missing:
                raise DataError(f"{len(missing)} of {len(expanded)} shards of {source} do not exist, e.g. {missing[0]}")
            shards.extend(expanded)
        elif any(c in source for c in "*?["):
            found = sorted(glob.glob(source))
            if not found:
                raise DataError(f"no shard matches {source}")
            shards.extend(found)
        elif path.is_file():
            shards.append(str(path))
        else:
            raise DataError(f"data path {source} does not exist")
    return shards


# --------------------------------------------------------------------------------------------- raw samples

def iter_raw_samples(url: str, on_error: Callable[[Exception], None] | None = None) -> Iterator[dict]:
    """Samples of one tar as dicts {'__key__': key, ext: bytes}; a truncated or bad tar ends early via on_error."""
    if _is_remote(url):
        from webdataset.gopen import gopen

        stream = gopen(url, "rb")
    else:
        stream = open(url, "rb")
    current_key, current = None, None
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                named = member_key(member.name)
                if named is None:
                    continue
                key, ext = named
                data = tar.extractfile(member).read()
                if key != current_key:
                    if current is not None:
                        yield current
                    current_key, current = key, {"__key__": key}
                current[ext] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if on_error is None:
            raise
        on_error(e)
    finally:
        stream.close()
    if current is not None:
        yield current


def decode_sample(sample: dict) -> tuple[Image.Image, str] | str:
    """(RGB image, caption) of a raw sample, or the reason it is skipped (one of SKIP_REASONS)."""
    image_ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if image_ext is None:
        return "missing_image"
    if CAPTION_EXT not in sample:
        return "missing_caption"
    try:
        caption = sample[CAPTION_EXT].decode("utf-8").strip()
    except UnicodeDecodeError:
        return "bad_caption"
    if not caption:
        return "missing_caption"
    # pixels bounded on the header, before decoding; no aspect bound: it trains on what the subset holds
    decoded = decode_image(sample[image_ext], PIXELS_ONLY, forms=("RGB",))
    if not decoded.ok:
        return "too_many_pixels" if decoded.status == TOO_MANY_PIXELS else "corrupt_image"
    return decoded.rgb, caption


# --------------------------------------------------------------------------------------------- the stream

def derive_seed(*parts) -> int:
    """A 63-bit seed from any tuple of values, stable across processes and Python versions."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ShardStream:
    """An endless seeded stream of raw samples from shards drawn with replacement, that can be saved and resumed.

    `mix` shards are open at once and each sample comes from a slot picked at random, which shuffles samples
    across shards (webdataset's shuffle buffer does the same job, but its state cannot be saved). A slot whose
    shard is exhausted draws a new shard at random from the whole list (resampling, as DataComp trains).
    """

    def __init__(self, shards: list[str], seed: int, mix: int = 4, state: dict | None = None):
        if not shards:
            raise DataError("no shards to read")
        self.shards = list(shards)
        self.rng = random.Random(seed)
        self.emitted = 0
        self.skipped = {r: 0 for r in SKIP_REASONS}
        self.exhausted: set[str] = set()  # shards read to the end at least once (for the nothing-trainable error)
        self.slots: list[list] = []  # [url, offset, iterator]
        if state is None:
            for _ in range(max(1, mix)):
                self.slots.append(self._open(self.rng.choice(self.shards), 0))
        else:
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))
            self.emitted = state["emitted"]
            self.skipped.update(state["skipped"])
            self.slots = [self._open(url, offset) for url, offset in state["slots"]]

    def _open(self, url: str, offset: int) -> list:
        def corrupt(_e):
            self.skipped["corrupt_shard"] += 1

        it = iter_raw_samples(url, on_error=corrupt)
        for _ in range(offset):  # reading the bytes is unavoidable in a tar stream, decoding is not
            if next(it, None) is None:
                break
        return [url, offset, it]

    def state(self) -> dict:
        """Everything needed to continue this stream exactly: JSON-serialisable."""
        return {
            "rng": list(self.rng.getstate()),
            "slots": [[url, offset] for url, offset, _ in self.slots],
            "emitted": self.emitted,
            "skipped": dict(self.skipped),
        }

    def __iter__(self):
        return self

    def __next__(self) -> tuple[dict, int]:
        """The next raw sample and its stream index (which seeds its augmentation)."""
        i = self.rng.randrange(len(self.slots))
        while True:
            url, offset, it = self.slots[i]
            sample = next(it, None)
            if sample is not None:
                self.slots[i][1] = offset + 1
                self.emitted += 1
                return sample, self.emitted - 1
            self.exhausted.add(url)
            self.slots[i] = self._open(self.rng.choice(self.shards), 0)


# --------------------------------------------------------------------------------------------- batches

class ShardBatches(torch.utils.data.IterableDataset):
    """Endless batches (images, tokens, stream state) for one rank; one seeded stream per DataLoader worker.

    Images are uint8 when the transform allows (see `pixels`): `Pixels.to_model` finishes them on the device.

    `worker_offset` rotates which stream each worker continues: the DataLoader hands out batches round-robin
    from worker 0, so after k consumed batches the next one must come from stream k % num_workers.
    """

    def __init__(self, shards, batch_size, pixels: Pixels, tokenizer, seed, rank=0, num_workers=0,
                 worker_offset=0, states: dict | None = None, mix: int = 4):
        self.shards = list(shards)
        self.batch_size = batch_size
        self.pixels = pixels
        self.tokenizer = tokenizer
        self.seed = seed
        self.rank = rank
        self.num_streams = max(1, num_workers)
        self.worker_offset = worker_offset
        self.states = {int(k): v for k, v in (states or {}).items()}
        self.mix = mix

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        role = (worker + self.worker_offset) % self.num_streams
        saved = self.states.get(role)
        stream = ShardStream(self.shards, derive_seed(self.seed, self.rank, role), self.mix,
                             json.loads(saved) if saved else None)
        found_usable = False
        while True:
            images, texts = None, []
            while len(texts) < self.batch_size:
                sample, index = next(stream)
                decoded = decode_sample(sample)
                if isinstance(decoded, str):
                    stream.skipped[decoded] += 1
                    if not found_usable and stream.exhausted.issuperset(self.shards):
                        raise DataError(
                            f"no trainable sample in any of the {len(self.shards)} shards "
                            f"(skipped: {_nonzero(stream.skipped)}); each sample needs a decodable "
                            f"{'/'.join(IMAGE_EXTS)} image and a non-empty .txt caption")
                    continue
                found_usable = True
                image, caption = decoded
                with seeded(derive_seed(self.seed, self.rank, role, index)):  # resumable augmentation
                    tensor = self.pixels.worker(image)
                if images is None:
                    images = _batch_tensor(self.batch_size, tensor, shared=info is not None)
                images[len(texts)] = tensor
                texts.append(caption)
            yield {
                "images": images,
                "texts": self.tokenizer(texts),
                "role": role,
                "state": json.dumps(stream.state()),
            }


def _batch_tensor(batch_size: int, first: torch.Tensor, shared: bool) -> torch.Tensor:
    """The batch's image tensor, filled sample by sample; in a worker, made in shared memory at once.

    The DataLoader would otherwise copy a finished batch into shared memory to hand it to the main process:
    a second copy of every batch (616 MB at 4096 x 224 px, uint8).
    """
    images = torch.empty((batch_size, *first.shape), dtype=first.dtype)
    return images.share_memory_() if shared else images


@contextlib.contextmanager
def seeded(seed: int):
    """Torch's and Python's RNGs seeded for one sample's augmentation, restored after.

    Python's too: timm's transforms (used by open_clip for --re-prob) draw crops and erasing from `random`.
    Only the CPU generator is seeded: `torch.manual_seed` also queues a seed for every accelerator backend,
    recording a stack trace each time (~1 ms a sample in torch 2.14, a third of the tiny scale's loader time).
    """
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def _nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if v}


class Position:
    """The data position of one rank: the stream state of each worker as of the last consumed batch."""

    def __init__(self, num_workers: int, batches: int = 0, states: dict | None = None):
        self.num_streams = max(1, num_workers)
        self.num_workers = num_workers
        self.batches = batches
        self.states = {int(k): v for k, v in (states or {}).items()}

    def check_workers(self, num_workers: int) -> None:
        """A stream continues exactly only with the workers it was saved with."""
        if self.num_workers != num_workers:
            raise DataError(f"the checkpoint was written with --workers {self.num_workers}; resume with the same "
                            f"number (got {num_workers}), or leave --workers out, so the data stream continues "
                            f"exactly")

    def consume(self, batch: dict) -> None:
        self.states[int(batch["role"])] = batch["state"]
        self.batches += 1

    def skipped(self) -> dict:
        """Skip counts summed over this rank's streams (including those before a resume)."""
        total = {r: 0 for r in SKIP_REASONS}
        for state in self.states.values():
            for reason, n in json.loads(state)["skipped"].items():
                total[reason] = total.get(reason, 0) + n
        return total

    def to_dict(self) -> dict:
        return {"num_workers": self.num_workers, "batches": self.batches,
                "states": {str(k): v for k, v in self.states.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        return cls(d["num_workers"], d["batches"], d["states"])


def make_loader(shards, batch_size, preprocess: Pixels | Callable, tokenizer, seed, rank, num_workers,
                position: Position, pin_memory=False, mix: int = 4):
    """A DataLoader that continues from `position` (a fresh Position starts the stream).

    `preprocess` is a train transform or its `Pixels`; batches of uint8 images need `Pixels.to_model`.
    """
    pixels = preprocess if isinstance(preprocess, Pixels) else Pixels(preprocess)
    position.check_workers(num_workers)
    dataset = ShardBatches(shards, batch_size, pixels, tokenizer, seed, rank, num_workers,
                           worker_offset=position.batches % position.num_streams, states=position.states, mix=mix)
    # prefetch 2 batches a worker (torch's default, as open_clip_train): the batches in flight cost
    # workers x prefetch x batch bytes of shared memory, 616 MB each at 4096 x 224 px in uint8 (2.5 GB as floats,
    # when the transform cannot be split), so 14 workers at the `small` batch hold 17 GB (69 GB as floats)
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=False, prefetch_factor=2 if num_workers > 0 else None)
