"""Fixtures for the trainer's tests: tiny shards written into tmp_path (nothing is downloaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from train_shards import write_shards  # noqa: E402


@pytest.fixture
def shards(tmp_path):
    """A folder of 3 shards x 24 good samples."""
    folder = tmp_path / "shards"
    write_shards(folder, n_shards=3, per_shard=24)
    return folder
