"""The task list and the eval-set reader: layout, and errors that name the missing file."""

from __future__ import annotations

import io
import tarfile

import pytest
import torch

import evalsynth
from evals.data import EvalDataError, EvalDataset, make_loader, open_eval_set
from evals.tasks import DEFAULT_TASKS, TaskError, load_tasks, select


def test_datacomp_task_list():
    tasks = load_tasks(DEFAULT_TASKS)
    scored = [t for t in tasks if t.scored]
    assert len(scored) == 38
    assert sorted(t.key for t in tasks if not t.scored) == ["fairness/fairface", "fairness/utkface"]
    by = {t.key: t for t in tasks}
    assert by["vtab/caltech101"].folder == "wds_vtab-caltech101_test"
    assert by["retrieval/mscoco_2014_5k_test_image_text_retrieval"].main_metric == "mean_recall@1"
    for k in ("vtab/caltech101", "fgvc_aircraft", "vtab/flowers", "vtab/pets"):
        assert by[k].main_metric == "mean_per_class_recall"
    assert by["wilds/fmow"].main_metric == "acc_worst_region"
    assert by["fairness/dollar_street"].main_metric == "acc_top5_wg"
    assert [t.type for t in scored].count("classification") == 30
    assert all(t.folder == "wds_" + t.key.replace("/", "-") + "_test" for t in tasks if t.type != "fairness")
    # DataComp's downloader and fairness evaluator drop the fairness/ prefix
    assert by["fairness/geode"].folder == "wds_geode_test" and by["fairness/utkface"].folder == "wds_utkface_test"
    from evals.tasks import folder_name
    assert all(t.folder == folder_name(t.key) for t in tasks)


def test_unknown_task_and_bad_list(tmp_path):
    tasks = load_tasks()
    with pytest.raises(TaskError, match="imagenet2k"):
        select(tasks, ["cifar10", "imagenet2k"])
    bad = tmp_path / "t.yaml"
    bad.write_text("tasks:\n  - key: x\n    type: segmentation\n")
    with pytest.raises(TaskError, match="t.yaml.*segmentation"):
        load_tasks(bad)


@pytest.fixture
def one_set(tmp_path):
    return evalsynth.make_classification_set(tmp_path / "wds_cifar10_test", n_images=9, n_shards=3)


@pytest.mark.parametrize("name", ["classnames.txt", "zeroshot_classification_templates.txt", "test/nshards.txt"])
def test_missing_file_is_named(one_set, name):
    (one_set / name).unlink()
    with pytest.raises(EvalDataError, match=name.replace(".", r"\.")):
        open_eval_set(one_set)


def test_empty_and_missing_shards(one_set):
    with tarfile.open(one_set / "test" / "1.tar", "w"):
        pass
    with pytest.raises(EvalDataError, match=r"empty shard .*1\.tar"):
        open_eval_set(one_set)
    (one_set / "test" / "1.tar").unlink()
    with pytest.raises(EvalDataError, match=r"missing shard .*1\.tar"):
        open_eval_set(one_set)


def test_retrieval_needs_no_classnames(tmp_path):
    root = evalsynth.make_retrieval_set(tmp_path / "r", n_images=3)
    es = open_eval_set(root, kind="retrieval")
    assert es.dataset_type == "retrieval" and es.classnames is None


@pytest.mark.parametrize("workers", [0, 2])
def test_every_sample_read_once_across_workers(one_set, workers):
    es = open_eval_set(one_set)
    ds = EvalDataset(es.shards, lambda im: torch.tensor(im.size), ("cls",))
    seen = [(tuple(s.tolist()), int(c)) for imgs, cls in make_loader(ds, 2, workers) for s, c in zip(imgs, cls)]
    assert len(seen) == 9
    ref = [(tuple(s.tolist()), int(c)) for imgs, cls in make_loader(ds, 4, 0) for s, c in zip(imgs, cls)]
    assert sorted(seen) == sorted(ref)


def test_sample_without_label_is_named(tmp_path):
    root = evalsynth.make_classification_set(tmp_path / "c", n_images=2, n_shards=1)
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf if not m.name.endswith("0000001.cls")]
    with tarfile.open(shard, "w") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data))
    ds = EvalDataset(open_eval_set(root).shards, lambda im: torch.zeros(1), ("cls",))
    with pytest.raises(EvalDataError, match=r"0\.tar: sample s0000001 has no \.cls"):
        list(ds)


@pytest.mark.parametrize("bad, status", [(b"<html>not an image</html>", "unidentified"), ("bomb", "too_many_pixels")])
def test_unusable_image_is_named(tmp_path, bad, status):
    """A broken or oversized image (bounded on its header, never decoded) fails the task, naming the sample."""
    from tests.train.train_shards import png_header

    root = evalsynth.make_classification_set(tmp_path / "c", n_images=2, n_shards=1)
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf]
    with tarfile.open(shard, "w") as tf:
        for m, data in members:
            if m.name.startswith("s0000001.") and m.name.rsplit(".", 1)[1] in ("jpg", "png", "webp"):
                data = png_header(10_000, 10_000) if bad == "bomb" else bad
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data))
    ds = EvalDataset(open_eval_set(root).shards, lambda im: torch.zeros(1), ("cls",))
    with pytest.raises(EvalDataError, match=rf"0\.tar: sample s0000001: its image cannot be used \({status}\)"):
        list(ds)
