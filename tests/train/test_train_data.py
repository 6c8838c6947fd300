"""The loader: shard lists, skipped samples, errors for unusable data, and an exactly resumable stream."""

import json
import random

import pytest
import torch

from train_shards import write_shards
from train.data import DataError, Position, ShardStream, make_loader, resolve_shards


def test_resolve_folder_brace_tar_and_join(tmp_path):
    a = write_shards(tmp_path / "a", n_shards=3, per_shard=2)
    b = write_shards(tmp_path / "b", n_shards=1, per_shard=2)
    assert resolve_shards(str(tmp_path / "a")) == [str(p) for p in a]
    assert resolve_shards(str(tmp_path / "a" / "{00000000..00000001}.tar")) == [str(p) for p in a[:2]]
    assert resolve_shards(str(b[0])) == [str(b[0])]
    assert resolve_shards(f"{tmp_path / 'a'}::{b[0]}") == [str(p) for p in a] + [str(b[0])]


def test_missing_and_empty_data_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_shards(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no \\*.tar shards"):
        resolve_shards(str(tmp_path / "empty"))
    write_shards(tmp_path / "a", n_shards=1, per_shard=2)
    with pytest.raises(DataError, match="do not exist"):
        resolve_shards(str(tmp_path / "a" / "{00000000..00000003}.tar"))


def _loader(shards, batch=4, workers=0, position=None, seed=0):
    from train.model import create

    _, preprocess, tokenizer = create("datacomp-tiny", torch.device("cpu"))
    position = position or Position(workers)
    return make_loader(resolve_shards(str(shards)), batch, preprocess, tokenizer, seed, 0, workers, position), position


def test_corrupt_samples_are_skipped_and_counted(tmp_path):
    bad = {0: "corrupt", 3: "no_image", 5: "no_caption"}
    write_shards(tmp_path / "s", n_shards=2, per_shard=8, bad=bad)
    loader, position = _loader(tmp_path / "s", batch=5)
    it = iter(loader)
    for _ in range(6):  # 30 good samples drawn from shards of 5 good + 3 bad
        batch = next(it)
        position.consume(batch)
        assert batch["images"].shape == (5, 3, 32, 32) and batch["texts"].shape == (5, 16)
    skipped = position.skipped()
    assert skipped["corrupt_image"] > 0 and skipped["missing_image"] > 0 and skipped["missing_caption"] > 0
    # every raw sample read is either in a batch or counted as skipped
    state = json.loads(position.states[0])
    assert state["emitted"] == 30 + sum(skipped.values())


def test_an_image_over_the_pixel_bound_is_skipped_before_decoding(tmp_path):
    """Untrusted images are bounded on their header: a decompression bomb is counted, never decoded."""
    write_shards(tmp_path / "s", n_shards=1, per_shard=6, bad={1: "bomb", 4: "bomb"})
    loader, position = _loader(tmp_path / "s", batch=4)
    position.consume(next(iter(loader)))
    skipped = position.skipped()
    assert skipped["too_many_pixels"] >= 1 and skipped["corrupt_image"] == 0


def test_nothing_trainable_is_a_clear_error(tmp_path):
    write_shards(tmp_path / "s", n_shards=2, per_shard=3, bad={0: "corrupt", 1: "no_caption", 2: "no_image"})
    loader, _ = _loader(tmp_path / "s")
    with pytest.raises(DataError, match="no trainable sample"):
        next(iter(loader))


def test_stream_state_continues_exactly(shards):
    paths = resolve_shards(str(shards))
    a = ShardStream(paths, seed=7, mix=2)
    for _ in range(30):  # crosses shard boundaries (24 samples per shard)
        next(a)
    b = ShardStream(paths, seed=7, mix=2, state=json.loads(json.dumps(a.state())))
    assert [next(a)[0]["__key__"] for _ in range(60)] == [next(b)[0]["__key__"] for _ in range(60)]


def test_seed_changes_the_stream(shards):
    paths = resolve_shards(str(shards))
    a, b = ShardStream(paths, seed=1), ShardStream(paths, seed=2)
    assert [next(a)[0]["__key__"] for _ in range(20)] != [next(b)[0]["__key__"] for _ in range(20)]


def test_loader_resumes_mid_run_with_workers(shards):
    """Batches after a restart from a saved Position equal those of an uninterrupted loader (2 workers)."""
    loader, position = _loader(shards, batch=4, workers=2)
    it = iter(loader)
    straight = []
    saved = None
    for i in range(7):
        batch = next(it)
        position.consume(batch)
        straight.append(batch)
        if i == 2:  # an odd count, so the resumed loader must start from the second worker's stream
            saved = json.loads(json.dumps(position.to_dict()))
    del it
    resumed_loader, resumed_position = _loader(shards, batch=4, workers=2, position=Position.from_dict(saved))
    resumed = iter(resumed_loader)
    for expected in straight[3:]:
        batch = next(resumed)
        assert batch["role"] == expected["role"]
        assert torch.equal(batch["images"], expected["images"])  # same samples and same augmentation
        assert torch.equal(batch["texts"], expected["texts"])


def test_timm_augmentation_is_seeded_per_sample(shards):
    """--re-prob uses open_clip's timm transforms, which draw from Python's `random`: seeded per sample too."""
    from train.model import create

    _, preprocess, tokenizer = create("datacomp-tiny", torch.device("cpu"),
                                      aug_cfg={"scale": (0.2, 1.0), "re_prob": 0.5, "use_timm": True})

    def first_batch(python_seed):
        random.seed(python_seed)  # whatever drew from Python's RNG before must not matter
        loader = make_loader(resolve_shards(str(shards)), 8, preprocess, tokenizer, 0, 0, 0, Position(0))
        state = random.getstate()
        images = next(iter(loader))["images"]
        assert random.getstate() == state  # and augmentation leaves it as it was
        return images

    assert torch.equal(first_batch(1), first_batch(2))
