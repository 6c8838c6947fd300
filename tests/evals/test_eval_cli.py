"""`evaluate` end to end on generated eval sets, and `evaluate leaderboard` on its output."""

from __future__ import annotations

import json
import math

import pytest

import evalsynth
from evals.cli import main
from evals.leaderboard import main as leaderboard_main


def _args(tiny_ckpt, eval_root, out, *extra):
    return ["--checkpoint", str(tiny_ckpt), "--model", evalsynth.TINY_ARCH, "--model-config",
            str(evalsynth.TINY_CONFIG), "--eval-dir", str(eval_root), "--output", str(out), "--device", "cpu",
            "--batch-size", "16", *extra]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_ckpt, eval_root):
    out = tmp_path_factory.mktemp("run")
    assert main(_args(tiny_ckpt, eval_root, out, "--workers", "2")) == 0
    return out


def test_results_match_clip_benchmark(run_dir, reference):
    rows = [json.loads(line) for line in (run_dir / "eval_results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["cifar10", "vtab/pcam", "retrieval/flickr30k"]
    by = {r["key"]: r for r in rows}
    for key in by:
        for name, v in reference[key].items():
            got = by[key]["metrics"][name]
            if isinstance(v, float) and math.isnan(v):
                assert got is None, (key, name)  # NaN is written as null
            else:
                assert got == pytest.approx(v, abs=1e-6), (key, name)
    assert by["cifar10"]["main_metric"] == by["cifar10"]["metrics"]["acc1"]
    assert by["retrieval/flickr30k"]["main_metric"] == pytest.approx(reference["retrieval/flickr30k"]["mean_recall@1"])
    assert {"key", "dataset", "main_metric", "metrics"} <= set(rows[0])


def test_summary_is_partial_and_names_missing(run_dir, capsys):
    s = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "eval_results.jsonl").read_text().splitlines()]
    assert s["partial"] is True and s["n_tasks"] == 3 and s["n_scored"] == 38
    assert len(s["missing"]) == 35 and "imagenet1k" in s["missing"] and "cifar10" not in s["missing"]
    assert s["average"] == pytest.approx(sum(r["main_metric"] for r in rows) / 3)


def test_printed_table(tmp_path, tiny_ckpt, eval_root, capsys):
    assert main(_args(tiny_ckpt, eval_root, tmp_path, "--workers", "0", "--only", "cifar10")) == 0
    out = capsys.readouterr().out
    assert "PARTIAL: 1/38" in out and "missing:" in out and "imagenet1k" in out
    assert [json.loads(x)["key"] for x in (tmp_path / "eval_results.jsonl").read_text().splitlines()] == ["cifar10"]


def test_bad_inputs_exit_with_message(tmp_path, tiny_ckpt, eval_root, capsys):
    assert main(_args(tiny_ckpt, eval_root, tmp_path, "--only", "imagenet2k")) == 2
    assert "unknown task(s) imagenet2k" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert main(_args(bad, eval_root, tmp_path)) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert main(_args(tiny_ckpt, tmp_path / "nothing-here", tmp_path / "o")) == 1
    assert "no task of the list has data" in capsys.readouterr().err


def _fake_run(path, name, metrics: dict, info=None):
    path.mkdir()
    with open(path / "eval_results.jsonl", "w") as f:
        for k, v in metrics.items():
            f.write(json.dumps({"key": k, "dataset": k, "main_metric": v, "metrics": {"x": v}}) + "\n")
    if info is not None:
        (path / "info.json").write_text(json.dumps({"name": name, **info}))
    return path


def test_leaderboard_sorts_and_adds_baselines(tmp_path, run_dir, capsys):
    a = _fake_run(tmp_path / "a", "clip_score", {"imagenet1k": 0.30, "cifar10": 0.9, "retrieval/flickr30k": 0.2},
                  {"scale": "medium", "subset_size": 3_800_000})
    b = _fake_run(tmp_path / "b", "no_filter", {"imagenet1k": 0.17, "cifar10": 0.5}, {"scale": "medium"})
    assert leaderboard_main([str(b), str(a), str(run_dir), "--format", "md"]) == 0
    out = capsys.readouterr().out
    # all three are partial (3, 2 and 3 of 38 tasks): listed apart, unranked, most tasks first, then by average
    body = [line for line in out.split("## Partial runs")[1].splitlines() if line.startswith("| ")][1:]
    names = [line.split("|")[1].strip() for line in body]
    tiny_avg = json.loads((run_dir / "summary.json").read_text())["average"]
    expected = sorted([("clip_score", 3, 1.4 / 3), ("no_filter", 2, 0.67 / 2), (run_dir.name, 3, tiny_avg)], key=lambda x: (-x[1], -x[2]))
    assert names[:3] == [n for n, _, _ in expected]
    assert "| clip_score | medium | 3,800,000 | 30.0 | 20.0* | 46.7* | 3/38 | 3 of 38 tasks (35 missing) |" in out
    assert "DataComp: Image-based ∩ CLIP score" in out and "| 29.7 |" in out  # medium baseline
    assert "| 63.1 |" not in out  # large-scale baselines only when asked for
    assert leaderboard_main([str(a), "--format", "csv", "--scale", "large"]) == 0
    csv_out = capsys.readouterr().out
    assert csv_out.splitlines()[0].startswith("#,run,scale") and "63.1" in csv_out and "29.7" not in csv_out
    out_file = tmp_path / "lb.html"
    assert leaderboard_main([str(a), "--format", "html", "--output", str(out_file)]) == 0
    assert "<td class=text>clip_score</td>" in out_file.read_text()


def test_leaderboard_missing_results(tmp_path, capsys):
    assert leaderboard_main([str(tmp_path)]) == 2
    assert "eval_results.jsonl" in capsys.readouterr().err
