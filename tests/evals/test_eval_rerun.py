"""`evaluate` into a folder that already has results: finished tasks are not run again, `--force` redoes them,
and results of another model are never mixed in (issue 18, item 6)."""

from __future__ import annotations

import json

import pytest

import evalsynth
import evals.model
from evals.cli import main


def _args(ckpt, eval_root, out, *extra):
    return ["--checkpoint", str(ckpt), "--model", evalsynth.TINY_ARCH, "--model-config", str(evalsynth.TINY_CONFIG),
            "--eval-dir", str(eval_root), "--output", str(out), "--device", "cpu", "--batch-size", "16",
            "--workers", "0", *extra]


def _rows(out):
    return [json.loads(line) for line in (out / "eval_results.jsonl").read_text().splitlines()]


def _ran(text: str) -> list[str]:
    """Task keys the run evaluated, from its `key: metric=value (N s)` lines."""
    return [ln.split(":")[0] for ln in text.splitlines() if "=" in ln and ln.rstrip().endswith("s)")]


def test_finished_tasks_are_skipped_and_only_the_rest_run(tmp_path, tiny_ckpt, eval_root, capsys):
    out = tmp_path / "out"
    assert main(_args(tiny_ckpt, eval_root, out, "--only", "cifar10")) == 0
    first = _rows(out)
    capsys.readouterr()

    assert main(_args(tiny_ckpt, eval_root, out, "--only", "cifar10", "vtab/pcam")) == 0
    text = capsys.readouterr().out
    assert _ran(text) == ["vtab/pcam"]
    assert "1 task(s) already in" in text and "--force" in text
    rows = _rows(out)
    assert [r["key"] for r in rows] == ["cifar10", "vtab/pcam"]
    assert rows[0] == first[0]  # kept as written, seconds included
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["main_metrics"]) == {"cifar10", "vtab/pcam"}


def test_nothing_to_do_loads_no_model(tmp_path, tiny_ckpt, eval_root, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(_args(tiny_ckpt, eval_root, out, "--only", "cifar10")) == 0
    before = _rows(out)
    capsys.readouterr()
    monkeypatch.setattr(evals.model, "load_model", lambda *a, **k: pytest.fail("model loaded with nothing to do"))
    assert main(_args(tiny_ckpt, eval_root, out, "--only", "cifar10")) == 0
    assert _ran(capsys.readouterr().out) == []
    assert _rows(out) == before


def test_force_runs_the_chosen_tasks_again_and_keeps_the_others(tmp_path, tiny_ckpt, eval_root, capsys):
    out = tmp_path / "out"
    assert main(_args(tiny_ckpt, eval_root, out, "--only", "cifar10", "vtab/pcam")) == 0
    pcam = _rows(out)[1]
    capsys.readouterr()
    assert main(_args(tiny_ckpt, eval_root, out, "--only", "cifar10", "--force")) == 0
    assert _ran(capsys.readouterr().out) == ["cifar10"]
    rows = _rows(out)
    assert sorted(r["key"] for r in rows) == ["cifar10", "vtab/pcam"]
    assert next(r for r in rows if r["key"] == "vtab/pcam") == pcam


def test_results_of_another_model_are_refused_then_replaced_with_force(tmp_path, tiny_ckpt, eval_root, capsys):
    out = tmp_path / "out"
    assert main(_args(tiny_ckpt, eval_root, out, "--only", "cifar10", "vtab/pcam")) == 0
    other = evalsynth.make_tiny_checkpoint(tmp_path / "other.pt", seed=7)
    capsys.readouterr()

    assert main(_args(other, eval_root, out, "--only", "cifar10")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another model" in err and "--force" in err
    assert len(_rows(out)) == 2  # untouched

    assert main(_args(other, eval_root, out, "--only", "cifar10", "--force")) == 0
    assert _ran(capsys.readouterr().out) == ["cifar10"]
    assert [r["key"] for r in _rows(out)] == ["cifar10"]  # the first model's pcam is gone, not mixed in
    assert json.loads((out / "eval_model.json").read_text())["checkpoint"] == str(other.resolve())
