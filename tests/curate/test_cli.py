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


def test_demo_runs_the_whole_loop_small(tmp_path):
    """`curate demo`, scaled down: download, scoring model, signals, dedup, two recipes, training, evaluation, leaderboard."""
    import pyarrow.parquet as pq

    from curate.demo.run import leaderboard_scores
    from curate.uids import uids_to_pairs
    from curate.subset import subset_counts

    work = tmp_path / "demo"
    out = curate("demo", "--workdir", work, "--samples", "300", "--clean-samples", "512", "--scorer-samples", "2048", "--train-samples", "128",
                 "--recipes", "no_filter", "clip_score_30pct", "--seed", "1", timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    assert "counts reconcile: True" in out.stdout
    for cmd in ("curate download", "train --scale tiny", "curate stage", "curate dedup", "curate run", "evaluate --checkpoint",
                "evaluate leaderboard"):
        assert f"$ {cmd}" in out.stdout
    summary = json.loads((work / "pool" / "download_stats.json").read_text())
    assert summary["refused"].get("scheme", 0) > 0 and summary["success"] > 0 and summary["reconciled"]
    # the leaderboard names both recipes, with scores read back from each run's eval_results.jsonl
    scores = leaderboard_scores(work)
    assert set(scores) == {"no_filter", "clip_score_30pct"}
    assert all(set(s) == {"demo/shapes", "demo/retrieval"} for s in scores.values())
    assert "clip_score_30pct" in out.stdout.split("[7/7]")[1] and (work / "leaderboard.html").exists()
    # the scoring model's CLIP score keeps fewer mismatched captions than the pool holds
    table = pq.read_table(work / "url_list.parquet", columns=["uid", "demo_kind"]).to_pydict()
    kept = subset_counts(read_subset(work / "subsets" / "clip_score_30pct" / "subset.npy"), uids_to_pairs(table["uid"])) > 0
    kinds = np.array(table["demo_kind"])
    assert kept.sum() > 0
    assert (kinds[kept] == "mismatched").mean() < (kinds == "mismatched").mean()
    assert (work / "subsets" / "clip_score_30pct" / "report.html").exists()
