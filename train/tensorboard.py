"""`train --report-to tensorboard`: the step log's scalars as TensorBoard event files under RUN/tensorboard/.

Names follow open_clip_train's (train/loss, train/lr, train/samples_per_second, train/scale), so dashboards made
for open_clip runs read these. On resume, events past the checkpoint's step are purged (TensorBoard's
purge_step), as log.jsonl is cut back, so every step is shown once.
"""

from __future__ import annotations

from pathlib import Path

#: tag -> the step-log key it plots
SCALARS = {
    "train/loss": "loss",
    "train/lr": "lr",
    "train/samples_per_second": "samples_per_s",
    "train/samples_per_second_per_gpu": "samples_per_s_per_gpu",
    "train/scale": "logit_scale",
    "train/data_wait": "data_wait",
}

FOLDER = "tensorboard"


class TensorBoardUnavailable(RuntimeError):
    """--report-to tensorboard without the tensorboard package."""


class TensorBoardLog:
    """Writes each step record's scalars; flushed at every checkpoint and at the end."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise TensorBoardUnavailable(f"--report-to tensorboard needs the tensorboard package ({e}); "
                                         f"install it: pip install tensorboard") from None
        self.path = Path(run_dir) / FOLDER
        self._w = SummaryWriter(str(self.path), purge_step=None if resume_step is None else resume_step + 1)

    def write(self, record: dict) -> None:
        step = record["step"]
        for tag, key in SCALARS.items():
            value = record.get(key)
            if isinstance(value, (int, float)):
                self._w.add_scalar(tag, value, step)

    def flush(self) -> None:
        self._w.flush()

    def close(self) -> None:
        self._w.close()
