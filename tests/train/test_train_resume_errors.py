"""`train --resume` of something that is not a training checkpoint is one line naming the file; a run leaves no
temporaries of a killed predecessor behind."""

import pytest
import torch

from curate.atomic import is_temporary
from train import checkpoint, cli


def _train(shards, run, *extra):
    return cli.main(["--scale", "tiny", "--data", str(shards), "--output", str(run), "--workers", "0", "--samples", "64",
                     "--no-progress", *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("content, why", [
    (b"", "empty file (0 bytes)"),
    (b"step 4, loss 2.3\n", "not a readable checkpoint (truncated, or not the zip archive torch.save writes)"),
])
def test_resume_of_a_file_that_is_no_checkpoint(shards, tmp_path, capsys, content, why):
    run = tmp_path / "run"
    bad = checkpoint.step_path(run, 4)  # `--resume latest` finds it as the newest checkpoint
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content)
    for resume in ("latest", str(bad)):
        assert _train(shards, run, "--resume", resume) == 2
        err = one_line_error(capsys)
        assert str(bad) in err and why in err, err


def test_resume_of_weights_that_hold_no_training_state(shards, tmp_path, capsys):
    weights = tmp_path / "final.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "model": "datacomp-tiny"}, weights)
    assert _train(shards, tmp_path / "run", "--resume", str(weights)) == 2
    err = one_line_error(capsys)
    assert str(weights) in err and "not a training checkpoint" in err
    assert _train(shards, tmp_path / "run", "--resume", str(tmp_path / "nope.pt")) == 2
    assert "nope.pt: no such checkpoint file" in one_line_error(capsys)


def test_a_finished_run_leaves_no_temporaries_of_a_killed_one(shards, tmp_path):
    run = tmp_path / "run"
    ckpts = checkpoint.checkpoint_dir(run)
    ckpts.mkdir(parents=True)
    planted = [ckpts / ".step_00000001.pt.k1ll3d00.tmp", run / ".info.json.k1ll3d00.tmp"]
    for p in planted:
        p.write_bytes(b"")  # what a kill right after the temporary was made leaves
    assert _train(shards, run, "--checkpoint-every", "1") == 0
    assert not [p for p in run.rglob("*") if is_temporary(p)]
    assert checkpoint.latest(run) is not None
