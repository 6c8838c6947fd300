"""The whole filtering-track path through the public commands, then the bundle read back by an independent reader.

A pool with shards -> `curate run --filter basic` -> `curate reshard` -> `train --scale tiny` (the scale exactly,
so the bundle is standard) -> `evaluate` on all 38 of DataComp's scored tasks, generated with a few images each in
its layout -> `evaluate bundle`, which is then complete, as the filtering track's submission needs. The reader
below uses none of the project's code: numpy reads the subset file as DataComp's resharder does, open_clip loads
the checkpoint, the results rows are checked against the keys, names and main metrics of DataComp's tasklist.yml,
and the hashes that tie subset, shards, training, checkpoint and results are recomputed from the files.
"""

from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest
import torch

import evalsynth
from curate.cli import main as curate
from evals.cli import main as evaluate
from tests.curate.helpers import write_shard_pool
from tests.train.conftest import one_torch_thread  # noqa: F401 (autouse: one torch thread, as the trainer's tests)
from train.cli import main as train

# DataComp evaluate.py's submit_to_firebase fields (the per-dataset main metrics come on top)
FORM_FIELDS = {"scale", "model", "dataset_size", "checkpoint", "batch_size", "learning_rate", "method_name",
               "author", "email", "hf_username", "hf_repo_name", "timestamp", "track", "writeup"}
# DataComp's tasklist.yml, its order: key -> (name, main_metric; "acc1" where it names none), the 38 tasks that
# carry a main metric (FairFace and UTKFace have none, so neither DataComp's average nor its form counts them).
# Written out here, not read from configs/evals/datacomp.yaml, so that the reader checks the project against it.
DATACOMP_TASKS = {
    "vtab/caltech101": ("Caltech-101", "mean_per_class_recall"), "cifar10": ("CIFAR-10", "acc1"),
    "vtab/cifar100": ("CIFAR-100", "acc1"), "vtab/clevr_count_all": ("CLEVR Counts", "acc1"),
    "vtab/clevr_closest_object_distance": ("CLEVR Distance", "acc1"), "country211": ("Country211", "acc1"),
    "vtab/dtd": ("Describable Textures", "acc1"), "vtab/eurosat": ("EuroSAT", "acc1"),
    "fgvc_aircraft": ("FGVC Aircraft", "mean_per_class_recall"), "food101": ("Food-101", "acc1"),
    "gtsrb": ("GTSRB", "acc1"), "imagenet1k": ("ImageNet 1k", "acc1"), "imagenet_sketch": ("ImageNet Sketch", "acc1"),
    "imagenetv2": ("ImageNet v2", "acc1"), "imagenet-a": ("ImageNet-A", "acc1"), "imagenet-o": ("ImageNet-O", "acc1"),
    "imagenet-r": ("ImageNet-R", "acc1"), "vtab/kitti_closest_vehicle_distance": ("KITTI Vehicle Distance", "acc1"),
    "mnist": ("MNIST", "acc1"), "objectnet": ("ObjectNet", "acc1"),
    "vtab/flowers": ("Oxford Flowers-102", "mean_per_class_recall"),
    "vtab/pets": ("Oxford-IIIT Pet", "mean_per_class_recall"), "voc2007": ("Pascal VOC 2007", "acc1"),
    "vtab/pcam": ("PatchCamelyon", "acc1"), "renderedsst2": ("Rendered SST2", "acc1"),
    "vtab/resisc45": ("RESISC45", "acc1"), "cars": ("Stanford Cars", "acc1"), "stl10": ("STL-10", "acc1"),
    "sun397": ("SUN397", "acc1"), "vtab/svhn": ("SVHN", "acc1"), "retrieval/flickr30k": ("Flickr", "mean_recall@1"),
    "retrieval/mscoco_2014_5k_test_image_text_retrieval": ("MSCOCO", "mean_recall@1"),
    "misc/winogavil": ("WinoGAViL", "jaccard_score_10-12"), "wilds/iwildcam": ("iWildCam", "F1-macro_all"),
    "wilds/camelyon17": ("Camelyon17", "acc1"), "wilds/fmow": ("FMoW", "acc_worst_region"),
    "fairness/dollar_street": ("Dollar Street", "acc_top5_wg"), "fairness/geode": ("GeoDE", "acc_wg"),
}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_filter_reshard_train_evaluate_bundle_read_back(tmp_path, capsys):
    pool, cur, shards, run, evals = (tmp_path / n for n in ("pool", "curated", "shards", "run", "evals"))
    write_shard_pool(pool, [40, 40, 40], seed=3, failed_per_shard=2)
    assert len(evalsynth.make_datacomp_suite(evals)) == 38  # every scored task, a few images each

    assert curate(["run", "--pool", str(pool), "--filter", "basic", "--output", str(cur), "--no-reshard",
                   "--no-report", "--no-progress", "--processes", "1"]) == 0
    assert curate(["reshard", "--pool", str(pool), "--subset", str(cur / "subset.npy"), "--output", str(shards),
                   "--shard-size", "32", "--processes", "1"]) == 0
    assert train(["--scale", "tiny", "--data", str(shards), "--output", str(run), "--workers", "0", "--no-progress",
                  "--keep", "1"]) == 0
    assert evaluate(["--checkpoint", str(run / "checkpoints" / "final.pt"), "--model", "datacomp-tiny",
                     "--eval-dir", str(evals), "--output", str(run / "evals"), "--workers", "0"]) == 0
    out = tmp_path / "bundle"
    capsys.readouterr()
    assert evaluate(["bundle", str(run), "--output", str(out), "--method-name", "basic filter", "--author", "Tester",
                     "--email", "t@example.org", "--hf-username", "tester", "--hf-repo-name", "dc-tiny"]) == 0
    printed = capsys.readouterr().out
    assert "upload" in printed and "over 38/38 tasks" in printed and "PARTIAL" not in printed

    # ---- the independent reader ----------------------------------------------------------------------------
    scale_dir = out / "tiny_scale"
    manifest = json.loads((out / "bundle.json").read_text())
    for name, entry in manifest["files"].items():  # every file is listed with its hash, and nothing else exists
        assert _sha(out / name) == entry["sha256"], name
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == set(manifest["files"]) | {"bundle.json"}

    # the subset file, as DataComp's resharder reads it
    sample_files = list((scale_dir / "samples").iterdir())
    assert [p.name for p in sample_files] == ["subset.npy"]
    subset = np.load(sample_files[0], mmap_mode="r")
    assert subset.dtype == np.dtype("u8,u8") and subset.ndim == 1 and len(subset) > 0
    assert np.all(np.diff(subset["f0"].astype(object) * 2**64 + subset["f1"].astype(object)) >= 0)  # sorted
    stats = json.loads((cur / "stats.json").read_text())
    assert len(subset) == stats["kept"] < 126  # basic dropped some of the pool
    # every trained sample (its key {uid}-{j}) is in the subset, found by binary search as the resharder does
    trained = []
    for tar in sorted(shards.glob("*.tar")):
        with tarfile.open(tar) as t:
            trained += sorted({m.name.split(".")[0].split("-")[0] for m in t.getmembers()})
    reshard_stats = json.loads((shards / "reshard_stats.json").read_text())
    assert len(trained) == reshard_stats["written"] > 0
    for uid in trained:
        key = np.array([(int(uid[:16], 16), int(uid[16:32], 16))], dtype=subset.dtype)
        i = int(np.searchsorted(subset, key)[0])
        assert i < len(subset) and subset[i] == key[0], uid

    # the checkpoint, loaded by open_clip from its own path, with the model config shipped beside it
    import open_clip

    open_clip.add_model_config(out / "provenance" / "datacomp-tiny.json")
    model, _, _ = open_clip.create_model_and_transforms("datacomp-tiny",
                                                                pretrained=str(scale_dir / "checkpoint.pt"))
    saved = torch.load(scale_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 64)

    # results: DataComp evaluate.py's rows {key, dataset, metrics: {..., main_metric}}, all 38 in its tasklist's
    # order, each main_metric the value of the metric its tasklist names
    rows = [json.loads(line) for line in (scale_dir / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == list(DATACOMP_TASKS)
    for r in rows:
        name, metric = DATACOMP_TASKS[r["key"]]
        assert set(r) == {"key", "dataset", "metrics"} and r["dataset"] == name
        assert r["metrics"]["main_metric"] == r["metrics"][metric], r["key"]
        assert 0.0 <= r["metrics"]["main_metric"] <= 1.0, r["key"]
    ours = {json.loads(line)["key"]: json.loads(line) for line in (run / "evals" / "eval_results.jsonl").open()}
    assert {r["key"]: r["metrics"]["main_metric"] for r in rows} == {k: v["main_metric"] for k, v in ours.items()}

    # the form: DataComp's fields, the scale's numbers, and each task's main metric under its dataset name
    form = json.loads((out / "submission.json").read_text())
    assert FORM_FIELDS <= form.keys()
    assert (form["scale"], form["model"], form["batch_size"], form["learning_rate"]) == ("tiny", "datacomp-tiny", 64, 1e-3)
    assert form["dataset_size"] == len(subset) and form["track"] == "filtering" and form["method_name"] == "basic filter"
    assert (out / form["checkpoint"]).resolve() == (scale_dir / "checkpoint.pt").resolve()
    names = [name for name, _ in DATACOMP_TASKS.values()]
    assert {k: form[k] for k in names} == {r["dataset"]: r["metrics"]["main_metric"] for r in rows}
    assert set(form) == FORM_FIELDS | set(names)  # as submit_to_firebase: the fields, then one number per task

    # the hashes that tie them: subset = curate's = the reshard's = what training recorded; the results' model =
    # the bundled checkpoint = the run's final weights; the run followed the tiny scale exactly
    info = json.loads((out / "provenance" / "info.json").read_text())
    sha_subset = _sha(sample_files[0])
    assert sha_subset == stats["subset_sha256"] == reshard_stats["subset_sha256"] == info["data_source"]["subset_sha256"]
    record = json.loads((out / "provenance" / "eval_model.json").read_text())
    assert record["checkpoint_sha256"] == _sha(scale_dir / "checkpoint.pt") == _sha(run / "checkpoints" / "final.pt")
    assert info["samples_seen"] == 4096 and info["non_standard"] == {} and info["finished"] is True
    assert manifest["training"]["standard_protocol"] is True
    evaluation = manifest["evaluation"]
    assert (evaluation["partial"], evaluation["n_tasks"], evaluation["n_scored"], evaluation["missing"]) == (
        False, 38, 38, [])
    assert manifest["complete"] is True
    # the manifest's average is the plain mean of the 38 main metrics the reader found
    assert evaluation["average"] == pytest.approx(np.mean([r["metrics"]["main_metric"] for r in rows]))
    # and the trainer's plot is there
    assert (run / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
