"""`train --report-to tensorboard` writes event files TensorBoard reads; every run draws RUN/training.png."""

from __future__ import annotations

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train import cli
from train.logs import read_log

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _train(shards, run, *extra):
    return cli.main(["--scale", "tiny", "--data", str(shards), "--output", str(run), "--workers", "0",
                     "--no-progress", "--samples", "150", "--checkpoint-every", "2", *extra])


def _scalars(run) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_files_hold_the_step_logs_scalars(shards, tmp_path):
    run = tmp_path / "run"
    assert _train(shards, run, "--report-to", "tensorboard") == 0
    steps = [r for r in read_log(run) if "loss" in r]
    scalars = _scalars(run)
    assert {"train/loss", "train/lr", "train/samples_per_second", "train/scale"} <= scalars.keys()
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([r["lr"] for r in steps], rel=1e-6)

    # resumed from step 2: step 3 is trained again, and TensorBoard shows it once (events past 2 purged)
    assert _train(shards, run, "--report-to", "tensorboard", "--resume", str(run / "checkpoints" /
                                                                            "step_00000002.pt")) == 0
    assert [s for s, _ in _scalars(run)["train/loss"]] == [1, 2, 3]


def test_training_plot_is_a_png_and_tensorboard_is_opt_in(shards, tmp_path):
    run = tmp_path / "run"
    assert _train(shards, run) == 0
    plot = run / "training.png"
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(plot) as img:
        img.verify()
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.width >= 600 and img.height >= 400
        # the loss curve is drawn in its colour (a blank canvas would pass the checks above)
        assert (59, 111, 182) in {c for _, c in img.convert("RGB").getcolors(1 << 16)}
    assert not (run / "tensorboard").exists()


def test_unknown_report_target_is_refused(shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _train(shards, tmp_path / "run", "--report-to", "wandb")
    assert e.value.code == 2 and "--report-to" in capsys.readouterr().err
