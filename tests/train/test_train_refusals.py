"""`train` says up front what it cannot do, and picks defaults the machine can run (issue 18, item 7).

Nothing here allocates a large scale's memory: the refusal happens before data or model are touched, and the
available memory is set by the test so the outcome does not depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train.scales
from train import cli

REPO = Path(__file__).resolve().parents[2]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def ram_64gb(monkeypatch):
    monkeypatch.setattr(train.scales, "available_memory", lambda *a, **k: (64 * 10**9, "of RAM available"))


def test_xlarge_on_a_cpu_is_refused_saying_what_it_needs(tmp_path, capsys, ram_64gb):
    run = tmp_path / "run"
    assert cli.main(["--scale", "xlarge", "--data", str(tmp_path / "shards"), "--output", str(run),
                     "--device", "cpu", "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("train: error: scale xlarge needs at least")
    assert "ViT-L-14" in line and "90,112 images as float32 54.3 GB" in line  # the allocation that killed it
    assert "64.0 GB of RAM available" in line
    assert "torchrun --nproc_per_node" in line and "--accum-freq" in line
    assert not run.exists()


def test_the_refusal_says_how_far_to_split_and_a_split_that_fits_passes(tmp_path, capsys, ram_64gb):
    data = tmp_path / "no-shards-here"
    assert cli.main(["--scale", "xlarge", "--data", str(data), "--output", str(tmp_path / "r"), "--device", "cpu",
                     "--accum-freq", "2"]) == 2
    line = _one_line(capsys.readouterr().err)
    ways = int(line.split("split each batch at least ")[1].split()[0])
    assert ways > 2
    # split that many ways (micro-batches here), the bound fits: the run goes on to look for its data
    assert cli.main(["--scale", "xlarge", "--data", str(data), "--output", str(tmp_path / "r"), "--device", "cpu",
                     "--accum-freq", str(ways)]) == 2
    err = capsys.readouterr().err
    assert "needs at least" not in err and str(data) in err


def test_scales_that_fit_are_not_refused(tmp_path, capsys, ram_64gb):
    data = tmp_path / "no-shards-here"
    for scale in ("tiny", "small"):
        assert cli.main(["--scale", scale, "--data", str(data), "--output", str(tmp_path / scale), "--device",
                         "cpu"]) == 2  # refused for the missing data, not for the scale
        err = capsys.readouterr().err
        assert "needs at least" not in err and str(data) in err


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_default_workers_on_a_cpu_fit_the_usable_cores(tmp_path):
    """On one usable core the default is one loader process, not 4 (torch warns about more workers than cores)."""
    from train_shards import write_shards

    write_shards(tmp_path / "shards", n_shards=2, per_shard=8)
    core = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-m", "train.cli", "--scale", "tiny", "--samples", "16", "--data",
                          str(tmp_path / "shards"), "--output", str(tmp_path / "run"), "--device", "cpu",
                          "--no-progress"], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                         preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "suggested max number of worker" not in out.stderr
    assert json.loads((tmp_path / "run" / "info.json").read_text())["workers"] == 1
