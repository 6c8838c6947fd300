"""A task list a user hands `evaluate --tasks`: YAML that is not plain values is one line naming the file and
the line, never run; an evaluation leaves no temporaries of a killed one behind."""

from __future__ import annotations

import json

import evalsynth
from curate.atomic import is_temporary
from evals.cli import main


def _args(tiny_ckpt, eval_root, out, *extra):
    return ["--checkpoint", str(tiny_ckpt), "--model", evalsynth.TINY_ARCH, "--model-config",
            str(evalsynth.TINY_CONFIG), "--eval-dir", str(eval_root), "--output", str(out), "--device", "cpu",
            "--batch-size", "16", "--workers", "0", *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_python_tag_in_the_task_list_is_refused_and_never_run(tmp_path, tiny_ckpt, eval_root, capsys):
    marker = tmp_path / "ran"
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(f"tasks:\n  - key: cifar10\n    dataset: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    assert main(_args(tiny_ckpt, eval_root, tmp_path / "out", "--tasks", str(tasks))) == 2
    err = one_line_error(capsys)
    assert f"{tasks}: line 3" in err and "python/object/apply" in err and "Python tags are refused" in err
    assert not marker.exists()


def test_a_task_list_that_is_not_yaml(tmp_path, tiny_ckpt, eval_root, capsys):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n  - key: [cifar10\n")
    assert main(_args(tiny_ckpt, eval_root, tmp_path / "out", "--tasks", str(tasks))) == 2
    assert f"{tasks}: line 3, column 1: not valid YAML" in one_line_error(capsys)
    tasks.write_bytes(b"tasks:\n  - key: caf\xe9\n")
    assert main(_args(tiny_ckpt, eval_root, tmp_path / "out", "--tasks", str(tasks))) == 2
    assert str(tasks) in one_line_error(capsys)


def test_an_evaluation_leaves_no_temporaries_of_a_killed_one(tmp_path, tiny_ckpt, eval_root):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".eval_results.jsonl.k1ll3d00.tmp").write_bytes(b'{"key": "cifar10", "main')
    assert main(_args(tiny_ckpt, eval_root, out, "--only", "cifar10")) == 0
    assert not [p for p in out.iterdir() if is_temporary(p)]
    assert [json.loads(x)["key"] for x in (out / "eval_results.jsonl").read_text().splitlines()] == ["cifar10"]
