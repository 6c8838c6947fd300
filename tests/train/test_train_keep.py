"""--keep N: only the newest N step checkpoints stay, pruned after a new one is whole; resume still works."""

import pytest
import torch

from train import checkpoint, cli
from train.logs import read_info, read_log


def _train(shards, run, *extra):
    # five steps of 8, a checkpoint after each
    return cli.main(["--scale", "tiny", "--data", str(shards), "--output", str(run), "--workers", "0",
                     "--no-progress", "--samples", "40", "--batch-size", "8", "--checkpoint-every", "1", *extra])


def _names(run) -> list[str]:
    return sorted(p.name for p in checkpoint.checkpoint_dir(run).iterdir())


def test_keep_prunes_and_resume_latest_still_works(shards, tmp_path):
    run = tmp_path / "run"
    assert _train(shards, run, "--keep", "2") == 0
    assert _names(run) == ["final.pt", "step_00000004.pt", "step_00000005.pt"]
    assert read_info(run)["keep"] == 2 and read_info(run)["non_standard"] == {"batch_size_per_rank": 8,
                                                                              "samples_seen": 40}
    removed = [r["removed"] for r in read_log(run) if r.get("event") == "checkpoint"]
    assert [[p.rsplit("/", 1)[1] for p in r] for r in removed] == [
        [], [], ["step_00000001.pt"], ["step_00000002.pt"], ["step_00000003.pt"]]
    unbroken = checkpoint.load(checkpoint.final_path(run))["state_dict"]

    # a crash after step 4: what --keep left is enough to continue to the same weights
    checkpoint.final_path(run).unlink()
    checkpoint.step_path(run, 5).unlink()
    assert _train(shards, run, "--keep", "2", "--resume", "latest") == 0
    assert _names(run) == ["final.pt", "step_00000004.pt", "step_00000005.pt"]
    resumed = checkpoint.load(checkpoint.final_path(run))["state_dict"]
    for name, value in unbroken.items():
        assert torch.equal(resumed[name], value), name


def test_pruning_waits_for_the_new_checkpoint(shards, tmp_path, monkeypatch):
    """A checkpoint that fails to be written (disk full, a kill) leaves the previous one in place."""
    real = checkpoint.save

    def save(obj, path):
        if path == checkpoint.step_path(run, 3):
            raise OSError("disk full")
        real(obj, path)

    monkeypatch.setattr(checkpoint, "save", save)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="disk full"):
        _train(shards, run, "--keep", "1")
    assert _names(run) == ["step_00000002.pt"]


def test_prune_keeps_final_temporaries_and_later_checkpoints(tmp_path):
    folder = checkpoint.checkpoint_dir(tmp_path)
    folder.mkdir()
    # step 9 was left by an attempt that went further before an explicit --resume of step 5
    names = [checkpoint.step_path(tmp_path, s).name for s in (1, 2, 3, 4, 5, 9)]
    for name in [*names, "final.pt", ".step_00000006.pt.x1.tmp"]:
        (folder / name).write_bytes(b"")
    removed = checkpoint.prune(tmp_path, keep=2, newest=5)
    assert sorted(p.name for p in removed) == names[:3]
    assert _names(tmp_path) == [".step_00000006.pt.x1.tmp", "final.pt", *names[3:]]
    assert checkpoint.prune(tmp_path, keep=0, newest=5) == [folder / names[3]]  # never the newest


@pytest.mark.parametrize("flag", ["--keep", "--accum-freq"])
def test_counts_must_be_positive(tmp_path, capsys, flag):
    with pytest.raises(SystemExit):
        cli.main(["--scale", "tiny", "--data", str(tmp_path), "--output", str(tmp_path / "run"), flag, "0"])
    assert "must be a positive integer" in capsys.readouterr().err
