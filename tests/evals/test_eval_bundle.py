"""`evaluate bundle`: a filtering-track submission gathered from a run, checked, written whole.

The runs here are assembled by hand (fast); tests/evals/test_submission_e2e.py makes one with the real commands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from curate.subset import write_subset
from curate.uids import UID_DTYPE
from evals.cli import main
from evals.tasks import load_tasks
from train.provenance import uid_multiset_sha256
from train.scales import get_scale


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pairs(n_rows, seed=0):
    rng = np.random.default_rng(seed)
    pairs = np.zeros(n_rows, dtype=UID_DTYPE)
    pairs["f0"], pairs["f1"] = rng.integers(0, 2**63, n_rows), rng.integers(0, 2**63, n_rows)
    pairs[1] = pairs[0]  # one uid listed twice (upsampled)
    return pairs


def _make_run(tmp_path, n_rows=50, keys=("imagenet1k", "cifar10", "retrieval/flickr30k"), evals_subdir=False,
              scale="small", source="subset"):
    """A curate output (subset.npy + stats.json) and a train/evaluate run folder as `train` and `evaluate` write
    them: info.json with the scale's protocol and data_source, checkpoints/final.pt, eval results and the record
    of the model that made them."""
    cur = tmp_path / "curated"
    subset = write_subset(cur / "subset.npy", _pairs(n_rows))
    (cur / "stats.json").write_text(json.dumps({
        "kept": n_rows, "rows_in": 400, "subset_sha256": _sha(subset), "pool": "/pools/small",
        "filters": [{"name": "clip_score", "fraction": 0.3}], "thresholds": {"clip_score": 0.28}}))
    protocol = dataclasses.asdict(get_scale(scale))
    data_source = ({"kind": "subset", "subset_sha256": _sha(subset), "subset_file": str(subset),
                    "reshard_stats": str(cur / "shards" / "reshard_stats.json")} if source == "subset" else
                   {"kind": "uid_multiset", "uid_multiset_sha256": uid_multiset_sha256(_pairs(n_rows)),
                    "samples": n_rows})
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "final.pt"
    torch.save({"state_dict": {"w": torch.arange(4.0)}, "model": protocol["model"], "scale": scale,
                "samples_seen": protocol["samples_seen"], "options": {}}, ckpt)
    (run / "info.json").write_text(json.dumps({
        "scale": scale, "protocol": protocol, "finished": True, "samples_seen": protocol["samples_seen"],
        "non_standard": {}, "data_source": data_source}))
    res = run / "evals" if evals_subdir else run
    res.mkdir(exist_ok=True)
    with open(res / "eval_results.jsonl", "w") as f:
        for i, k in enumerate(keys):
            f.write(json.dumps({"key": k, "dataset": k, "main_metric": 0.1 + 0.01 * i,
                                "metrics": {"acc1": 0.1 + 0.01 * i}}) + "\n")
    (res / "eval_model.json").write_text(json.dumps({"model": protocol["model"], "checkpoint": str(ckpt),
                                                     "checkpoint_sha256": _sha(ckpt)}))
    return run, subset


def _edit(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_bundle_is_datacomps_upload_layout_with_manifest(tmp_path, capsys):
    run, subset = _make_run(tmp_path)
    out = tmp_path / "bundle"
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out), "--method-name", "clip30",
                 "--author", "A. Author", "--email", "a@example.org"]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["bundle.json", "provenance/eval_model.json", "provenance/info.json", "provenance/stats.json",
                     "small_scale/checkpoint.pt", "small_scale/results.jsonl", "small_scale/samples/subset.npy",
                     "submission.json"]
    m = json.loads((out / "bundle.json").read_text())
    for name, entry in m["files"].items():
        assert entry["sha256"] == _sha(out / name) and entry["bytes"] == (out / name).stat().st_size
    assert m["subset"]["sha256"] == _sha(subset) and m["subset"]["rows"] == 50 and m["subset"]["unique_uids"] == 49
    assert m["subset"]["trained_on_by"] == "subset_sha256"
    assert m["checkpoint"]["sha256"] == _sha(run / "checkpoints" / "final.pt")
    assert m["training"]["standard_protocol"] is True and m["training"]["departures"] == []
    assert m["training"]["scale_numbers"]["global_batch"] == 4096
    assert m["upload"]["folder"] == "small_scale" and m["upload"]["leaderboard_scale"] is True
    ev = m["evaluation"]
    assert ev["partial"] is True and ev["n_tasks"] == 3 and len(ev["missing"]) == 35
    assert ev["average"] == pytest.approx((0.10 + 0.11 + 0.12) / 3)
    assert m["complete"] is False and all(c["ok"] for c in m["checks"])
    # DataComp's results rows: key, dataset name, metrics holding main_metric; in the task list's order
    rows = [json.loads(line) for line in (out / "small_scale" / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["cifar10", "imagenet1k", "retrieval/flickr30k"]
    assert all(set(r) == {"key", "dataset", "metrics"} for r in rows)
    assert rows[1] == {"key": "imagenet1k", "dataset": "ImageNet 1k", "metrics": {"acc1": 0.1, "main_metric": 0.1}}
    form = json.loads((out / "submission.json").read_text())
    assert form["method_name"] == "clip30" and form["track"] == "filtering" and form["dataset_size"] == 50
    assert (form["batch_size"], form["learning_rate"], form["model"]) == (4096, 5e-4, "ViT-B-32")
    assert form["ImageNet 1k"] == 0.1 and form["hf_username"] is None
    out_text = capsys.readouterr().out
    assert "PARTIAL: 35 tasks missing" in out_text and "--hf-username" in out_text
    # run again onto the same folder: an earlier bundle is replaced
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_complete_bundle_finds_the_subset_the_run_trained_on(tmp_path):
    keys = [t.key for t in load_tasks() if t.scored]
    run, subset = _make_run(tmp_path, keys=keys, evals_subdir=True)
    out = tmp_path / "b"
    assert main(["bundle", str(run), "--output", str(out)]) == 0  # subset from info.json's data_source
    m = json.loads((out / "bundle.json").read_text())
    assert m["complete"] is True and m["evaluation"]["n_tasks"] == 38 and m["evaluation"]["missing"] == []
    assert m["files"]["small_scale/samples/subset.npy"]["source"] == str(subset.resolve())


def test_a_subset_other_than_the_trained_one_is_refused(tmp_path, capsys):
    """Issue 18 item 5: the bundle accepted any subset. The expected and the given hash are both named."""
    run, subset = _make_run(tmp_path)
    other_dir = tmp_path / "other"
    other = write_subset(other_dir / "subset.npy", _pairs(50, seed=1))
    (other_dir / "stats.json").write_text(json.dumps({"kept": 50, "subset_sha256": _sha(other)}))
    out = tmp_path / "bundle"
    assert main(["bundle", str(run), "--subset", str(other), "--output", str(out)]) == 2
    line = [ln for ln in capsys.readouterr().err.splitlines() if "subset = training data" in ln]
    assert len(line) == 1 and _sha(subset) in line[0] and _sha(other) in line[0]
    assert not out.exists()

    # shards not from a reshard: the run's uid multiset against the subset's rows
    run2, subset2 = _make_run(tmp_path / "two", source="uid_multiset")
    assert main(["bundle", str(run2), "--subset", str(subset2), "--output", str(out)]) == 0
    assert json.loads((out / "bundle.json").read_text())["subset"]["trained_on_by"] == "uid_multiset_sha256"
    assert main(["bundle", str(run2), "--subset", str(other), "--output", str(tmp_path / "b2")]) == 2
    err = capsys.readouterr().err
    assert uid_multiset_sha256(_pairs(50)) in err and uid_multiset_sha256(_pairs(50, seed=1)) in err

    # a run that does not say what it trained on cannot be bundled
    info = json.loads((run / "info.json").read_text())
    del info["data_source"]
    (run / "info.json").write_text(json.dumps(info))
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(tmp_path / "b3")]) == 2
    assert "does not record what the run trained on" in capsys.readouterr().err


def test_scale_numbers_come_from_scales_yaml(tmp_path, capsys):
    """Issue 18 item 5: a tiny run of 512 samples was told "tiny prescribes 512" (its own override)."""
    run, subset = _make_run(tmp_path, scale="tiny")
    tiny = dataclasses.asdict(get_scale("tiny"))
    _edit(run / "info.json", samples_seen=512, protocol={**tiny, "samples_seen": 512, "global_batch": 32},
          non_standard={"samples_seen": 512, "batch_size_per_rank": 32, "patch_dropout": 0.5})
    torch.save({"state_dict": {"w": torch.zeros(1)}, "model": "datacomp-tiny", "samples_seen": 512},
               run / "checkpoints" / "final.pt")
    _edit(run / "eval_model.json", checkpoint_sha256=_sha(run / "checkpoints" / "final.pt"))
    out = tmp_path / "bundle"
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the run saw 512 samples; scale tiny prescribes 4,096" in err and "prescribes 512" not in err
    assert "global_batch: the run used 32, scale tiny prescribes 64" in err and "patch_dropout=0.5" in err
    assert not out.exists()
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out), "--allow-non-standard"]) == 0
    m = json.loads((out / "bundle.json").read_text())
    assert m["training"]["standard_protocol"] is False and m["complete"] is False
    assert m["upload"]["leaderboard_scale"] is False
    assert (out / "provenance" / "datacomp-tiny.json").is_file()  # the project model's config travels along
    assert "NON-STANDARD training" in capsys.readouterr().out


def test_results_of_another_checkpoint_are_refused(tmp_path, capsys):
    run, subset = _make_run(tmp_path)
    _edit(run / "eval_model.json", checkpoint_sha256="0" * 64)
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(tmp_path / "b")]) == 2
    assert "results from this checkpoint" in capsys.readouterr().err
    (run / "eval_model.json").unlink()
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(tmp_path / "b")]) == 2
    assert "cannot tell which model made" in capsys.readouterr().err


def test_inconsistent_run_is_refused(tmp_path, capsys):
    run, subset = _make_run(tmp_path)
    stats = json.loads((subset.parent / "stats.json").read_text())
    _edit(subset.parent / "stats.json", kept=51)
    info = json.loads((run / "info.json").read_text())
    _edit(run / "info.json", finished=False, samples_seen=1000)
    out = tmp_path / "bundle"
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "kept 51" in err and "stats.json" in err and "finished=False" in err and "saw 1000 samples" in err
    assert not out.exists()
    # a subset file that is not the one the recipe hashed
    (subset.parent / "stats.json").write_text(json.dumps({**stats, "subset_sha256": "0" * 64}))
    (run / "info.json").write_text(json.dumps(info))
    assert main(["bundle", str(run), "--subset", str(subset), "--output", str(out)]) == 2
    assert "subset sha256" in capsys.readouterr().err and not out.exists()


def test_missing_files_are_named(tmp_path, capsys):
    run, subset = _make_run(tmp_path)
    subset.rename(subset.with_name("elsewhere.npy"))  # neither RUN/subset.npy nor the recorded one exists
    out = str(tmp_path / "bundle")
    assert main(["bundle", str(run), "--output", out]) == 2
    err = capsys.readouterr().err
    assert str(run / "subset.npy") in err and str(subset) in err
    subset.with_name("elsewhere.npy").rename(subset)
    (subset.parent / "stats.json").unlink()
    assert main(["bundle", str(run), "--subset", str(subset), "--output", out]) == 2
    assert f"{subset.parent / 'stats.json'}" in capsys.readouterr().err
    run2, subset2 = _make_run(tmp_path / "two")
    (run2 / "eval_results.jsonl").unlink()
    assert main(["bundle", str(run2), "--subset", str(subset2), "--output", out]) == 2
    err = capsys.readouterr().err
    assert str(run2 / "eval_results.jsonl") in err and str(run2 / "evals" / "eval_results.jsonl") in err
    (run2 / "checkpoints" / "final.pt").unlink()
    assert main(["bundle", str(run2), "--subset", str(subset2), "--output", out]) == 2
    assert str(run2 / "checkpoints" / "final.pt") in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.arange(5))
    run3, subset3 = _make_run(tmp_path / "three")
    assert main(["bundle", str(run3), "--subset", str(bad), "--stats", str(subset3.parent / "stats.json"),
                 "--output", out]) == 2
    assert "bad.npy" in capsys.readouterr().err and not (tmp_path / "bundle").exists()
    # never overwrite a folder that is not an earlier bundle
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    assert main(["bundle", str(run3), "--subset", str(subset3), "--output", str(tmp_path / "keep")]) == 2
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"
