"""`curate` options that would do nothing or fail late are refused at once, in one line (issue 18, item 7)."""

from __future__ import annotations

import json

import pytest

from curate.cli import main
from tests.curate.helpers import write_metadata_pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta")
    write_metadata_pool(root, [150, 150])
    return root


def _error(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("extra, option", [(["--fraction", "0.3"], "--fraction 0.3"),
                                           (["--threshold", "0.25"], "--threshold 0.25"),
                                           (["--arch", "b32"], "--arch b32")])
def test_an_option_no_selected_filter_takes_is_refused(tmp_path, pool, capsys, extra, option):
    out = tmp_path / "out"
    assert main(["run", "--pool", str(pool), "--filter", "basic", *extra, "--output", str(out)]) == 2
    line = _error(capsys)
    assert f"{option} applies to no selected filter" in line and "clip_score" in line
    assert not out.exists()


def test_an_option_some_selected_filter_takes_is_used(tmp_path, pool, capsys):
    out = tmp_path / "out"
    assert main(["run", "--pool", str(pool), "--filter", "basic", "--filter", "clip_score", "--fraction", "0.3",
                 "--arch", "b32", "--output", str(out), "--processes", "1", "--no-report"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert [t["fraction"] for t in stats["thresholds"]] == [0.3]


def test_a_recipe_run_points_to_set_for_its_filters(tmp_path, pool, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - clip_score: {fraction: 0.3}\n")
    assert main(["run", "--pool", str(pool), "--config", str(recipe), "--fraction", "0.5",
                 "--output", str(tmp_path / "out")]) == 2
    assert "--set NAME.fraction=VALUE" in _error(capsys)


def test_a_parameter_of_the_wrong_type_is_named_before_any_work(tmp_path, pool, capsys):
    out = tmp_path / "out"
    assert main(["run", "--pool", str(pool), "--filter", "basic", "--set", "basic.min_words=three",
                 "--output", str(out)]) == 2
    assert _error(capsys) == "curate run: error: --filter basic: min_words must be an integer, got 'three'"
    assert not out.exists()
    assert main(["run", "--pool", str(pool), "--filter", "basic", "--set", "basic.language=no",  # YAML's false
                 "--output", str(out)]) == 2
    assert "language must be text, got False" in _error(capsys)


def test_a_recipe_parameter_of_the_wrong_type_names_file_and_line(tmp_path, pool, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - caption_quality:\n      reject_urls: sometimes\n")
    assert main(["run", "--pool", str(pool), "--config", str(recipe), "--output", str(tmp_path / "out")]) == 2
    line = _error(capsys)
    assert f"{recipe}:3:20:" in line and "reject_urls must be true or false, got 'sometimes'" in line


def test_numbers_are_converted_to_the_parameter_type(tmp_path, pool, capsys):
    """200.0 for an integer and 3 for a float are the same values as 200 and 3.0: same subset."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["run", "--pool", str(pool), "--filter", "basic", "--processes", "1", "--no-report"]
    assert main([*common, "--set", "basic.min_side=200.0", "--set", "basic.max_aspect=3", "--output", str(a)]) == 0
    assert main([*common, "--output", str(b)]) == 0
    assert (a / "subset.npy").read_bytes() == (b / "subset.npy").read_bytes()


@pytest.mark.parametrize("command", [["dedup"], ["decontaminate", "--eval-dir", "."]])
def test_a_missing_pool_is_named_as_missing(tmp_path, capsys, command):
    missing = tmp_path / "nope"
    assert main([command[0], "--pool", str(missing), *command[1:]]) == 2
    line = _error(capsys)
    assert f"{missing}: pool folder does not exist" in line and "curate stage" not in line
    assert not missing.exists()
