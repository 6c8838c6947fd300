"""Loading CLIP weights where the user meets it: `curate stage`, `curate filters targets`, `evaluate` (issue 18, items 1-3).

Nothing here reaches a network: the hub caches point at empty folders under tmp_path, HF_HUB_OFFLINE is set, or
the hub endpoint is a closed port on 127.0.0.1. Checkpoints are random tiny models written here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from curate.signals.clip import register_configs
from tests.curate.helpers import write_shard_pool

REPO = Path(__file__).resolve().parents[2]
TINY = "datacomp-tiny"
RANDOM_INIT = "initialized randomly"


def _env(tmp_path: Path, **extra) -> dict:
    """A child environment whose every model cache is an empty folder, with no proxy."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("HF_")}
    home = tmp_path / "home"
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), HF_HOME=str(tmp_path / "hf"),
               TORCH_HOME=str(tmp_path / "torch"), PYTHONPATH=str(REPO), **extra)
    return env


def _run(module: str, args: list, env: dict, timeout: int = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=timeout)
    return out, time.monotonic() - t0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A random datacomp-tiny in the trainer's checkpoint layout."""
    register_configs()
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"state_dict": open_clip.create_model(TINY).state_dict(), "model": TINY}, path)
    return path


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pool")
    write_shard_pool(root, [3])
    return root


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_stage_default_weights_offline_fail_in_one_line_naming_the_flag(tmp_path, pool):
    env = _env(tmp_path, HF_HUB_OFFLINE="1")
    out, seconds = _run("curate.cli", ["stage", "--pool", pool, "--signals", "clip", "--no-progress",
                                       "--processes", "1"], env)
    assert out.returncode == 2, out.stderr[-2000:]
    line = _one_error_line(out.stderr)
    assert "ViT-L-14 'openai' weights" in line
    assert "timm/vit_large_patch14_clip_224.openai" in line  # which weights
    assert str(tmp_path / "hf" / "hub") in line  # where they were looked for
    assert "HF_HUB_OFFLINE" in line and line.endswith("--pretrained PATH")  # why, and the flag for a local file
    assert seconds < 30
    assert not (pool / "columns" / "clip_l14").exists() or not any((pool / "columns" / "clip_l14").iterdir())


def test_stage_unreachable_hub_fails_in_seconds_not_after_retries(tmp_path, pool):
    """No offline flag, and a hub that refuses connections: one attempt, not the hub client's minute of retries."""
    env = _env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    out, seconds = _run("curate.cli", ["stage", "--pool", pool, "--signals", "clip", "--model", "ViT-B-32",
                                       "--no-progress", "--processes", "1"], env)
    assert out.returncode == 2
    line = _one_error_line(out.stderr)
    assert "ViT-B-32 'openai' weights" in line and "cannot be reached" in line and "--pretrained PATH" in line
    assert "Retrying" not in out.stderr
    assert seconds < 30


def test_stage_names_aesthetic_pretrained_for_its_feed(tmp_path, pool):
    weights = tmp_path / "aesthetic.pth"
    weights.write_bytes(b"")  # never read: the feed's weights are looked for first
    env = _env(tmp_path, HF_HUB_OFFLINE="1")
    out, _ = _run("curate.cli", ["stage", "--pool", pool, "--signals", "aesthetic", "--aesthetic-weights", weights,
                                 "--no-progress", "--processes", "1"], env)
    assert out.returncode == 2
    assert _one_error_line(out.stderr).endswith("--aesthetic-pretrained PATH")


def test_run_computing_a_missing_signal_offline_names_clip_checkpoint(tmp_path, pool):
    """`curate run` computes l14_img for image_based itself; its option for a local file is --clip-checkpoint."""
    out, seconds = _run("curate.cli", ["run", "--pool", pool, "--filter", "image_based", "--set",
                                       f"image_based.targets={tmp_path / 't.npy'}", "--output", tmp_path / "out",
                                       "--processes", "1"], _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert out.returncode == 2
    line = _one_error_line(out.stderr)
    assert "ViT-L-14 'openai' weights" in line and line.endswith("--clip-checkpoint l14=PATH")
    assert seconds < 30


def test_stage_with_a_local_checkpoint_prints_no_random_init_warning(tmp_path, tiny_ckpt):
    work = tmp_path / "pool"
    write_shard_pool(work, [3])
    out, _ = _run("curate.cli", ["stage", "--pool", work, "--signals", "clip", "--model", TINY, "--pretrained",
                                 tiny_ckpt, "--clip-tag", "t", "--device", "cpu", "--no-progress", "--processes", "1"],
                  _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert RANDOM_INIT not in out.stderr and "No pretrained weights" not in out.stderr
    assert any((work / "columns" / "clip_t").glob("*.parquet"))


def test_filters_targets_takes_the_project_model_and_a_local_checkpoint(tmp_path, tiny_ckpt):
    out_file = tmp_path / "targets.npy"
    out, _ = _run("curate.cli", ["filters", "targets", "--model", TINY, "--pretrained", tiny_ckpt, "--templates",
                                 "simple", "--output", out_file], _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and RANDOM_INIT not in out.stderr
    arr = np.load(out_file)
    assert arr.shape[0] == 1000 and arr.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=1e-5)

    # the rows are the checkpoint's text embeddings, not a random model's
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, SIMPLE_IMAGENET_TEMPLATES

    register_configs()
    model = open_clip.create_model(TINY)
    model.load_state_dict(torch.load(tiny_ckpt, weights_only=True)["state_dict"])
    model.eval()
    tok = open_clip.get_tokenizer(TINY)
    with torch.no_grad():
        f = model.encode_text(tok([t(IMAGENET_CLASSNAMES[7]) for t in SIMPLE_IMAGENET_TEMPLATES])).float()
    mean = (f / f.norm(dim=-1, keepdim=True)).mean(0)
    np.testing.assert_allclose(arr[7], (mean / mean.norm()).numpy(), atol=1e-5)


def test_filters_targets_offline_default_names_the_flag(tmp_path):
    out, seconds = _run("curate.cli", ["filters", "targets", "--output", tmp_path / "t.npy"],
                        _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert out.returncode == 2
    line = _one_error_line(out.stderr)
    assert "ViT-L-14 'openai' weights" in line and line.endswith("--pretrained PATH")
    assert seconds < 30 and not (tmp_path / "t.npy").exists()


def _eval_set(root: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "evals"))
    import evalsynth

    evalsynth.make_classification_set(root / "wds_cifar10_test", n_classes=3, n_images=6, n_templates=2, n_shards=1)
    return root


def test_evaluate_offline_tag_names_checkpoint_flag(tmp_path):
    evals = _eval_set(tmp_path / "evals")
    out, seconds = _run("evals.cli", ["--checkpoint", "openai", "--model", "ViT-B-32", "--eval-dir", evals,
                                      "--output", tmp_path / "out"], _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert out.returncode == 2
    line = _one_error_line(out.stderr)
    assert line.startswith("evaluate: error: no local copy of the ViT-B-32 'openai' weights")
    assert str(tmp_path / "hf" / "hub") in line and line.endswith("--checkpoint PATH")
    assert seconds < 30


def test_evaluate_with_a_local_checkpoint_prints_no_random_init_warning(tmp_path, tiny_ckpt):
    evals = _eval_set(tmp_path / "evals")
    out, _ = _run("evals.cli", ["--checkpoint", tiny_ckpt, "--model", TINY, "--eval-dir", evals, "--only", "cifar10",
                                "--workers", "0", "--output", tmp_path / "out"], _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert RANDOM_INIT not in out.stderr and RANDOM_INIT not in out.stdout


# ---- a pretrained tag whose weights are in the local cache loads without a network ----------------------


def _fake_hub_cache(cache: Path, repo: str, filename: str, state_dict: dict) -> None:
    """The Hugging Face cache layout of one file: refs/main names a snapshot holding it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    torch.save(state_dict, snap / filename)


def test_cached_tag_loads_offline_with_the_tags_settings(tmp_path, monkeypatch):
    """`curate filters targets --pretrained TAG` with the tag's weights in the hub cache: no network is tried
    (HF_HUB_OFFLINE and a closed endpoint), the cached weights are used, with the tag's QuickGELU."""
    import huggingface_hub.constants as hub
    from open_clip import pretrained as oc_pretrained

    from curate.cli import main

    register_configs()
    torch.manual_seed(11)
    cfg = json.loads(json.dumps(open_clip.get_model_config(TINY)))
    cfg["quick_gelu"] = True
    weights = open_clip.CLIP(**cfg).state_dict()
    _fake_hub_cache(tmp_path / "hub", "example/tiny-clip", "open_clip_pytorch_model.bin", weights)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY, {"cachedtag": {"hf_hub": "example/tiny-clip/",
                                                                         "quick_gelu": True, "mean": (0.5,) * 3,
                                                                         "std": (0.25,) * 3}})
    from curate.signals import clip as clip_mod

    clip_mod._load_clip_cached.cache_clear()
    out_file = tmp_path / "t.npy"
    assert main(["filters", "targets", "--model", TINY, "--pretrained", "cachedtag", "--templates", "simple",
                 "--output", str(out_file)]) == 0
    loaded = clip_mod.load_clip(clip_mod.ClipSpec(TINY, "cachedtag", "targets"), "cpu")
    for k, v in weights.items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    assert isinstance(loaded.model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert tuple(loaded.preprocess_cfg["mean"]) == (0.5,) * 3 and tuple(loaded.preprocess_cfg["std"]) == (0.25,) * 3
    assert np.load(out_file).shape[0] == 1000
