"""End-to-end `train` runs on the tiny scale: exact budget, logs, info.json, checkpoints open_clip can load."""

import math

import open_clip
import pytest
import torch

from train import checkpoint, cli
from train.logs import read_info, read_log
from train_shards import write_shards


def _train(shards, run, *extra):
    return cli.main(["--scale", "tiny", "--data", str(shards), "--output", str(run), "--workers", "0",
                     "--no-progress", *extra])


def test_exact_budget_logs_and_checkpoints(shards, tmp_path):
    run = tmp_path / "run"
    # 150 samples with the tiny scale's global batch of 64: steps of 64, 64 and a trimmed 22
    assert _train(shards, run, "--samples", "150", "--checkpoint-every", "2", "--seed", "5") == 0

    steps = [r for r in read_log(run) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [r["samples_seen"] for r in steps] == [64, 128, 150]
    for r in steps:
        assert math.isfinite(r["loss"]) and r["lr"] > 0 and r["samples_per_s"] > 0
        assert r["samples_per_s_per_gpu"] == r["samples_per_s"]
        assert 0 <= r["data_wait"] <= 1
        assert r["mfu"] is None  # no peak FLOP/s known for a CPU
    # warmup of 8 steps: lr rises linearly as open_clip's cosine_lr does
    assert [r["lr"] for r in steps] == pytest.approx([1e-3 * k / 8 for k in (1, 2, 3)])

    info = read_info(run)
    assert info["scale"] == "tiny" and info["seed"] == 5 and info["finished"] is True
    assert info["samples_seen"] == 150 and info["steps_done"] == 3
    assert info["non_standard"] == {"samples_seen": 150}
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["open_clip"] == open_clip.__version__

    names = sorted(p.name for p in checkpoint.checkpoint_dir(run).iterdir())
    assert names == ["final.pt", "step_00000002.pt", "step_00000003.pt"]
    state = checkpoint.load(checkpoint.latest(run))
    assert state["step"] == 3 and state["samples_seen"] == 150
    assert {"optimizer", "rng", "data", "scaler", "state_dict"} <= state.keys()
    assert state["data"][0]["batches"] == 3

    final = checkpoint.final_path(run)
    model, _, _ = open_clip.create_model_and_transforms("datacomp-tiny", pretrained=str(final))
    trained = checkpoint.load(final)["state_dict"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    fresh, _, _ = open_clip.create_model_and_transforms("datacomp-tiny")
    assert not torch.equal(fresh.state_dict()["visual.conv1.weight"], trained["visual.conv1.weight"])

    # resuming a finished run trains nothing more
    assert _train(shards, run, "--samples", "150", "--checkpoint-every", "2", "--seed", "5",
                  "--resume", "latest") == 0
    assert [r["step"] for r in read_log(run) if "loss" in r] == [1, 2, 3]
    assert checkpoint.load(final)["samples_seen"] == 150

    # a resume must be the same run
    with pytest.raises(ValueError, match="--seed 5"):
        _train(shards, run, "--samples", "150", "--checkpoint-every", "2", "--seed", "6", "--resume", "latest")
    with pytest.raises(ValueError, match="protocol"):
        _train(shards, run, "--samples", "160", "--checkpoint-every", "2", "--seed", "5", "--resume", "latest")


def test_bad_data_is_reported(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", tmp_path / "run") == 2
    assert "no *.tar shards" in capsys.readouterr().err
    assert _train(tmp_path / "missing", tmp_path / "run") == 2
    assert "does not exist" in capsys.readouterr().err
    write_shards(tmp_path / "bad", n_shards=1, per_shard=2, bad={0: "corrupt", 1: "no_caption"})
    assert _train(tmp_path / "bad", tmp_path / "run") == 2
    assert "no trainable sample" in capsys.readouterr().err


def test_corrupt_samples_are_counted_in_info(tmp_path):
    write_shards(tmp_path / "s", n_shards=2, per_shard=20, bad={2: "corrupt", 7: "no_image", 11: "no_caption"})
    run = tmp_path / "run"
    assert _train(tmp_path / "s", run, "--samples", "64") == 0
    skipped = read_info(run)["skipped"]
    assert skipped["corrupt_image"] >= 1 and skipped["missing_image"] >= 1 and skipped["missing_caption"] >= 1
    assert read_info(run)["samples_seen"] == 64


def test_a_last_step_too_small_for_every_rank_is_refused_before_work(tmp_path):
    """66 samples at batch 64 on 4 ranks: the last step's 2 samples would leave two ranks with nothing to run."""
    from train import distributed, loop
    from train.scales import get_scale

    opts = loop.Options(scale=get_scale("tiny"), data=str(tmp_path / "none"), output=str(tmp_path / "run"), samples=66)
    with pytest.raises(ValueError, match="last step holds 2 samples, fewer than the 4 ranks"):
        loop._run(opts, distributed.World(rank=0, world_size=4))
    assert not (tmp_path / "run").exists()
