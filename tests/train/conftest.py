"""Fixtures for the trainer's tests: tiny shards written into tmp_path (nothing is downloaded), one CPU thread."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from train_shards import write_shards  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy shared CPU competing threads run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shards(tmp_path):
    """A folder of 3 shards x 24 good samples."""
    folder = tmp_path / "shards"
    write_shards(folder, n_shards=3, per_shard=24)
    return folder
