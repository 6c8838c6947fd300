"""The `curate` command line, end to end, as a user runs it."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

from curate.subset import read_subset
from tests.curate.helpers import write_metadata_pool


def curate(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_bare_folder_of_datacomp_metadata_is_a_pool(tmp_path):
    write_metadata_pool(tmp_path / "meta", [400, 300], seed=3, subdir=None)
    out = curate("run", "--pool", tmp_path / "meta", "--filter", "clip_score", "--fraction", "0.3", "--arch", "b32",
                 "--output", tmp_path / "out", "--processes", "1")
    assert out.returncode == 0, out.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    scores = np.concatenate([pq.read_table(p).column("clip_b32_similarity_score").to_numpy(zero_copy_only=False)
                             for p in sorted((tmp_path / "meta").glob("*.parquet"))]).astype(float)
    threshold = -np.sort(-scores)[int(len(scores) * 0.3)]
    assert stats["thresholds"][0]["threshold"] == threshold
    assert len(read_subset(tmp_path / "out" / "subset.npy")) == int(np.sum(scores >= threshold)) == stats["kept"]
    assert "threshold clip_b32_similarity_score top 30%" in out.stdout
    assert not (tmp_path / "out" / "shards").exists()  # metadata only: no shards to write


def test_unknown_filter_lists_the_known_ones(tmp_path):
    write_metadata_pool(tmp_path / "pool", [10])
    out = curate("run", "--pool", tmp_path / "pool", "--filter", "clip_scor", "--output", tmp_path / "o")
    assert out.returncode == 2
    assert "unknown filter 'clip_scor'" in out.stderr and "clip_score" in out.stderr and "basic" in out.stderr


def test_missing_pool_and_bad_subset_are_clear_errors(tmp_path):
    out = curate("run", "--pool", tmp_path / "nope", "--filter", "no_filter", "--output", tmp_path / "o")
    assert out.returncode == 2 and "does not exist" in out.stderr
    write_metadata_pool(tmp_path / "pool", [10])
    (tmp_path / "s.npy").write_bytes(b"junk")
    out = curate("reshard", "--pool", tmp_path / "pool", "--subset", tmp_path / "s.npy", "--output", tmp_path / "o")
    assert out.returncode == 2 and "s.npy" in out.stderr


def test_filters_listing_and_help():
    out = curate("filters")
    assert out.returncode == 0
    for name in ("no_filter", "basic", "clip_score", "laion2b"):
        assert name in out.stdout
    for cmd in ("download", "run", "reshard", "demo"):
        h = curate(cmd, "--help")
        assert h.returncode == 0 and "--engine" in h.stdout or cmd == "demo"


def test_demo_runs_the_whole_foundation_loop(tmp_path):
    out = curate("demo", "--workdir", tmp_path / "demo", "--samples", "300", "--seed", "1")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "counts reconcile: True" in out.stdout and "reconcile: True" in out.stdout
    summary = json.loads((tmp_path / "demo" / "pool" / "download_stats.json").read_text())
    assert summary["refused"].get("scheme", 0) > 0 and summary["success"] > 0
    subset = read_subset(tmp_path / "demo" / "clip_score_l14_30pct" / "subset.npy")
    assert len(subset) >= int(300 * 0.3)  # ties at the threshold may add rows, never remove them
    line = next(l for l in out.stdout.splitlines() if l.startswith("what clip_score kept"))
    kept = json.loads(line.split(": ", 1)[1])
    assert kept["mismatched"].startswith("0/")  # the scores single out captions that do not match
    assert list((tmp_path / "demo" / "clip_score_l14_30pct" / "shards").glob("*.tar"))
