"""`evaluate download`: hub repo names, copy / convert / verify / skip, offline through a local hub folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import evalsynth
from evals.cli import main
from evals.data import iter_tar_samples, open_eval_set
from evals.download import PARQUET_REVISION, download, source_for
from evals.tasks import load_tasks


def _task(key):
    return next(t for t in load_tasks() if t.key == key)


def test_repos_follow_datacomp():
    tasks = {t.key: t for t in load_tasks()}
    assert source_for(tasks["cifar10"]).repo == "djghosh/wds_cifar10_test"
    assert source_for(tasks["vtab/caltech101"]).repo == "djghosh/wds_vtab-caltech101_test"
    assert source_for(tasks["wilds/iwildcam"]).repo == "djghosh/wds_wilds-iwildcam_test"
    assert source_for(tasks["fairness/dollar_street"]).repo == "djghosh/wds_dollar_street_test"
    s = source_for(tasks["retrieval/mscoco_2014_5k_test_image_text_retrieval"])
    assert (s.repo, s.format, s.revision) == ("nlphuji/mscoco_2014_5k_test_image_text_retrieval", "retrieval",
                                             PARQUET_REVISION)
    assert source_for(tasks["retrieval/flickr30k"]).repo == "nlphuji/flickr30k"
    assert (source_for(tasks["misc/winogavil"]).repo, source_for(tasks["misc/winogavil"]).format) == \
        ("nlphuji/winogavil", "winogavil")
    # every webdataset task lands where its repo is named after (DataComp reads the repo name as the folder)
    for t in tasks.values():
        if source_for(t).format == "wds":
            assert source_for(t).repo == f"djghosh/{t.folder}"


@pytest.fixture()
def hub(tmp_path):
    root = tmp_path / "hub"
    evalsynth.make_classification_set(root / "djghosh/wds_cifar10_test", n_classes=5, n_images=12, n_templates=2,
                                      n_shards=2)
    (root / "djghosh/wds_cifar10_test/README.md").write_text("not copied\n")
    evalsynth.make_classification_set(root / "djghosh/wds_geode_test", n_classes=3, n_images=6, n_templates=1,
                                      n_shards=1, metadata_ranges=[3, 4])
    evalsynth.write_parquet(root / "nlphuji/flickr30k/TEST/test/0000.parquet", evalsynth.retrieval_rows(7))
    evalsynth.write_parquet(root / "nlphuji/flickr30k/TEST/test/0001.parquet", evalsynth.retrieval_rows(3, seed=9))
    return root


def test_copy_convert_and_skip(tmp_path, hub, capsys):
    evals = tmp_path / "evals"
    rc = main(["download", "--eval-dir", str(evals), "--hub-root", str(hub),
               "--only", "cifar10", "fairness/geode", "retrieval/flickr30k"])
    assert rc == 0
    # webdataset repos are copied byte for byte (README and other top-level extras left out)
    src = hub / "djghosh/wds_cifar10_test"
    for rel in ("classnames.txt", "zeroshot_classification_templates.txt", "test/nshards.txt", "test/0.tar",
                "test/1.tar"):
        assert (evals / "wds_cifar10_test" / rel).read_bytes() == (src / rel).read_bytes()
    assert not (evals / "wds_cifar10_test/README.md").exists()
    assert (evals / "wds_geode_test/test/0.tar").is_file()  # DataComp's folder for fairness/geode
    assert json.loads((evals / "wds_cifar10_test/source.json").read_text())["repo"] == "djghosh/wds_cifar10_test"
    assert [p.name for p in evals.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers

    # retrieval parquet -> webdataset: every row, captions one per line, image bytes unchanged
    es = open_eval_set(evals / "wds_retrieval-flickr30k_test", kind="retrieval")
    samples = [s for shard in es.shards for s in iter_tar_samples(shard)]
    rows = evalsynth.retrieval_rows(7) + evalsynth.retrieval_rows(3, seed=9)
    assert len(samples) == len(rows) == 10
    for s, r in zip(samples, rows):
        assert s["txt"].decode().splitlines() == [" ".join(c.split()) for c in r["caption"]]
        img = s.get("jpg", s.get("png"))
        assert img == r["image"]["bytes"]
    assert samples[0]["txt"].decode().splitlines()[0] == "a caption with a newline"

    # a second run finds everything complete and touches nothing (the hub may even be gone)
    shutil.rmtree(hub)
    capsys.readouterr()
    assert main(["download", "--eval-dir", str(evals), "--hub-root", str(hub),
                 "--only", "cifar10", "fairness/geode", "retrieval/flickr30k"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 3 and "0 downloaded, 3 already present, 0 failed" in out


def test_incomplete_folder_is_replaced_whole(tmp_path, hub):
    evals = tmp_path / "evals"
    task = _task("cifar10")
    assert download([task], evals, hub, log=lambda *_: None) == {"cifar10": "downloaded"}
    (evals / "wds_cifar10_test/test/1.tar").unlink()  # as if a previous copy was cut short
    (evals / "wds_cifar10_test/stale.txt").write_text("from the broken copy")
    assert download([task], evals, hub, log=lambda *_: None) == {"cifar10": "downloaded"}
    assert (evals / "wds_cifar10_test/test/1.tar").is_file()
    assert not (evals / "wds_cifar10_test/stale.txt").exists()


def test_incomplete_repo_fails_and_leaves_nothing(tmp_path, hub, capsys):
    (hub / "djghosh/wds_cifar10_test/test/nshards.txt").write_text("3\n")  # says 3, holds 2
    evals = tmp_path / "evals"
    assert main(["download", "--eval-dir", str(evals), "--hub-root", str(hub), "--only", "cifar10"]) == 1
    captured = capsys.readouterr()
    assert "test/2.tar" in captured.out and "failed: cifar10" in captured.err
    assert list(evals.iterdir()) == []
    assert main(["download", "--eval-dir", str(evals), "--hub-root", str(hub), "--only", "mnist"]) == 1
    assert "djghosh/wds_mnist_test" in capsys.readouterr().out  # the missing repo is named
    # the hub's parquet conversion of a large dataset holds only its first part: refused, not half-converted
    evalsynth.write_parquet(hub / "nlphuji/mscoco_2014_5k_test_image_text_retrieval/default/partial-test/0000.parquet",
                            evalsynth.retrieval_rows(2))
    assert main(["download", "--eval-dir", str(evals), "--hub-root", str(hub), "--only",
                 "retrieval/mscoco_2014_5k_test_image_text_retrieval"]) == 1
    assert "partial" in capsys.readouterr().out and list(evals.iterdir()) == []


def test_unknown_task(tmp_path, capsys):
    assert main(["download", "--eval-dir", str(tmp_path), "--only", "imagenet2k"]) == 2
    assert "unknown task(s) imagenet2k" in capsys.readouterr().err


def test_hub_path_uses_snapshot_download(tmp_path, hub, monkeypatch):
    """Without a hub root the same code calls huggingface_hub.snapshot_download (faked: no network in tests)."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, *, repo_type=None, revision=None, local_dir=None, allow_patterns=None, **kw):
        calls.append((repo_id, repo_type, revision, allow_patterns))
        shutil.copytree(hub / repo_id, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / ".cache/huggingface").mkdir(parents=True)  # what huggingface_hub leaves in local_dir
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("EVALS_HUB_ROOT", raising=False)
    evals = tmp_path / "evals"
    assert main(["download", "--eval-dir", str(evals), "--only", "cifar10", "retrieval/flickr30k"]) == 0
    assert calls == [("djghosh/wds_cifar10_test", "dataset", None, ["*.txt", "test/*"]),
                     ("nlphuji/flickr30k", "dataset", PARQUET_REVISION, ["*.parquet"])]
    assert not (evals / "wds_cifar10_test/.cache").exists()
    assert (evals / "wds_retrieval-flickr30k_test/dataset_type.txt").read_text().strip() == "retrieval"
