"""`evaluate leaderboard` on runs made by the real commands (curate run, train, evaluate): non-standard and
partial runs are listed apart with the reason, subset sizes come from what each run trained on, and the
html format is a whole page in the filter report's style."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from curate.demo.evalsets import write_eval_sets
from curate.page import CSS
from evals.cli import main as evaluate_main
from evals.leaderboard import main as leaderboard_main
from evals.run_info import run_info
from tests.curate.helpers import write_shard_pool
from train import cli as train_cli

SAMPLES = 40  # 2 x 20 downloaded samples, all kept by no_filter and resharded


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A: trained with --samples/--batch-size (non-standard), evaluated into a folder of its own; B: the same
    and --siglip, evaluated into its run folder; Z: a run folder with no task evaluated."""
    root = tmp_path_factory.mktemp("leaderboard")
    write_shard_pool(root / "pool", [20, 20], seed=3)
    res = subprocess.run([sys.executable, "-m", "curate.cli", "run", "--pool", root / "pool", "--filter", "no_filter",
                          "--output", root / "subset", "--processes", "1"], check=False, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    tasks = write_eval_sets(root / "evals", seed=5, per_class=1, retrieval_images=8)
    budget = ["--samples", "16", "--batch-size", "8", "--workers", "0", "--no-progress"]
    for name, extra in (("A", []), ("B", ["--siglip"])):
        assert train_cli.main(["--scale", "tiny", "--data", str(root / "subset" / "shards"), "--output",
                               str(root / name), *budget, *extra]) == 0
    for name, out in (("A", root / "A-evals"), ("B", root / "B")):
        assert evaluate_main(["--checkpoint", str(root / name / "checkpoints" / "final.pt"), "--model", "datacomp-tiny",
                              "--eval-dir", str(root / "evals"), "--tasks", str(tasks), "--output", str(out),
                              "--device", "cpu", "--workers", "0"]) == 0
    (root / "Z").mkdir()
    (root / "Z" / "eval_results.jsonl").write_text("")
    (root / "Z" / "info.json").write_text((root / "A" / "info.json").read_text())
    return root, tasks


def board(root, tasks, fmt, capsys, *extra):
    """`evaluate leaderboard` as a user types it: (stdout, stderr)."""
    capsys.readouterr()
    assert evaluate_main(["leaderboard", str(root / "A-evals"), str(root / "B"), str(root / "Z"), "--tasks", str(tasks),
                          "--format", fmt, *extra]) == 0
    out = capsys.readouterr()
    return out.out, out.err


def test_markdown_sets_non_standard_and_partial_runs_apart(runs, capsys):
    root, tasks = runs
    out, err = board(root, tasks, "md", capsys)
    sections = {part.split("\n", 1)[0]: part for part in out.split("## ")[1:]}
    a = "Non-standard runs (batch_size_per_rank=8, samples_seen=16), ranked among themselves"
    b = "Non-standard runs (batch_size_per_rank=8, loss=siglip, samples_seen=16), ranked among themselves"
    assert list(sections) == ["Standard runs, ranked", b, a, "Partial runs, not ranked"]  # options sections by name
    assert "No run is standard and complete." in sections["Standard runs, ranked"]
    # each ranked only in its own section, with the reason; subset size from the shards it trained on (sizes.json)
    assert f"| 1 | A-evals | tiny | {SAMPLES} |" in sections[a] and "non-standard: batch_size_per_rank=8, samples_seen=16 |" in sections[a]
    assert f"| 1 | B | tiny | {SAMPLES} |" in sections[b] and "loss=siglip" in sections[b]
    assert "| Z | tiny | " in sections["Partial runs, not ranked"] and "0 of 2 tasks: no task scored" in sections["Partial runs, not ranked"]
    assert f"{root / 'Z'}: listed apart: 0 of 2 tasks: no task scored" in err and f"{root / 'B'}: listed apart" in err


def test_csv_carries_the_section_and_why(runs, capsys):
    root, tasks = runs
    out, _ = board(root, tasks, "csv", capsys)
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"A-evals", "B", "Z"}
    assert rows["A-evals"]["section"] == "non-standard: batch_size_per_rank=8, samples_seen=16" and rows["A-evals"]["#"] == "1"
    assert rows["B"]["section"] == "non-standard: batch_size_per_rank=8, loss=siglip, samples_seen=16"
    assert rows["Z"]["section"] == "partial" and rows["Z"]["#"] == "" and rows["Z"]["why apart"].startswith("0 of 2 tasks: no task scored; non-standard:")
    assert rows["A-evals"]["subset size"] == rows["B"]["subset size"] == str(SAMPLES)


def test_html_is_a_whole_page_in_the_report_style(runs, capsys, tmp_path):
    root, tasks = runs
    board(root, tasks, "html", capsys, "--output", str(tmp_path / "lb.html"))
    page = (tmp_path / "lb.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>evaluate leaderboard</title>" in page and page.rstrip().endswith("</html>")
    assert CSS in page and CSS in (root / "subset" / "report.html").read_text()  # one stylesheet for both pages
    assert page.count("<section class=board") == 4 and "class=warn" in page and "0 of 2 tasks: no task scored" in page
    assert "title='from info.json data_source.samples'" in page  # where each subset size came from


def test_run_info_reads_what_the_trainer_records(runs, tmp_path):
    root, _ = runs
    info = json.loads((root / "A" / "info.json").read_text())
    a = run_info(root / "A-evals")  # found through eval_model.json's checkpoint
    assert a["scale"] == "tiny" and a["non_standard"] == info["non_standard"] == {"batch_size_per_rank": 8, "samples_seen": 16}
    # train's record of the samples it read (train.provenance) is believed first
    assert info["data_source"]["samples"] == SAMPLES
    assert a["subset_size"] == SAMPLES and a["subset_size_source"] == "info.json data_source.samples"
    run = tmp_path / "older"
    run.mkdir()
    older = {k: v for k, v in info.items() if k != "data_source"}
    (run / "info.json").write_text(json.dumps({**older, "data": {"path": info["data"], "samples_in_data": 123}}))
    assert run_info(run)["subset_size"] == 123 and run_info(run)["subset_size_source"] == "info.json data.samples_in_data"
    # without a record: the data folder's sizes.json, also behind a brace pattern, then its reshard_stats.json
    (run / "info.json").write_text(json.dumps(older))
    assert run_info(run)["subset_size"] == SAMPLES and run_info(run)["subset_size_source"].endswith("sizes.json")
    shards = root / "subset" / "shards"
    (run / "info.json").write_text(json.dumps({**older, "data": str(shards / "{00000000..00000001}.tar")}))
    assert run_info(run)["subset_size"] == SAMPLES
    copy = tmp_path / "shards-copy"
    copy.mkdir()
    (copy / "reshard_stats.json").write_text((shards / "reshard_stats.json").read_text())
    (run / "info.json").write_text(json.dumps({**older, "data": str(copy)}))
    assert run_info(run) == {**run_info(run), "subset_size": SAMPLES, "subset_size_source": str(copy / "reshard_stats.json")}
    # no info.json anywhere: the options train wrote into final.pt
    ev = tmp_path / "evals-only"
    ev.mkdir()
    ckpt = tmp_path / "elsewhere.pt"
    torch.save({"options": {"loss": "siglip"}, "state_dict": {"w": torch.zeros(2)}}, ckpt)
    (ev / "eval_model.json").write_text(json.dumps({"model": "x", "checkpoint": str(ckpt)}))
    assert run_info(ev)["non_standard"] == {"loss": "siglip"} and run_info(ev)["subset_size"] is None


def test_unreadable_info_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_results.jsonl").write_text("")
    (run / "info.json").write_text("{not json")
    assert leaderboard_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "info.json" in err and "not readable JSON" in err
    (run / "info.json").write_text("{}")
    (run / "eval_results.jsonl").write_text("{broken\n")
    assert leaderboard_main([str(run)]) == 2
    assert "eval_results.jsonl" in capsys.readouterr().err


def test_subset_size_from_subset_file_when_nothing_else(tmp_path):
    import numpy as np

    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "subset.npy", np.zeros(7, dtype=np.dtype("u8,u8")))
    assert run_info(run)["subset_size"] == 7
    assert run_info(Path(tmp_path / "empty"))["subset_size"] is None
