"""`curate embed-evals` writes the npz `curate decontaminate --eval-embeddings` reads, in the pool's embedding space.

A tiny open_clip model with random weights (made here, no download) embeds the pool through `curate stage`
and the eval sets through `curate embed-evals`; eval images that are byte copies of pool images must get the
pool's own embeddings, and cosine decontamination must then find exactly those copies.
"""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.cli import main as curate_main
from tests.curate.dedup.test_decontaminate_and_filters import (
    _smooth_png,
    _write_eval_set,
)
from tests.curate.helpers import tar_samples, tiny_clip_checkpoint, write_shard_pool

TINY = "datacomp-tiny"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(tiny_clip_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt"))


def _pool_images(root):
    images = {}
    for t in sorted((root / "shards").glob("*.tar")):
        for _, files in tar_samples(t):
            images[json.loads(files["json"])["uid"]] = files["jpg"]
    return images


def test_embed_evals_matches_stage_and_feeds_decontaminate(tmp_path, checkpoint, capsys):
    root = tmp_path / "pool"
    write_shard_pool(root, [8, 6], seed=3, failed_per_shard=1)
    model = ["--model", TINY, "--pretrained", checkpoint, "--clip-tag", "tiny"]
    assert curate_main(["stage", "--pool", str(root), "--signals", "phash,clip", *model, "--device", "cpu",
                        "--processes", "1", "--no-progress"]) == 0
    images = _pool_images(root)
    uids = list(images)
    evals = tmp_path / "evals"
    not_an_image = b"\x89PNG\r\n\x1a\nbroken"
    _write_eval_set(evals, "cars", [images[uids[2]], _smooth_png(1), not_an_image])
    _write_eval_set(evals, "pets", [_smooth_png(2), images[uids[9]]])
    npz = tmp_path / "eval_emb.npz"
    assert curate_main(["embed-evals", "--eval-dir", str(evals), "--output", str(npz), *model, "--device", "cpu"]) == 0
    assert "4 eval images embedded" in capsys.readouterr().out

    with np.load(npz, allow_pickle=False) as z:
        emb, sets, keys = z["embeddings"], z["eval_set"].tolist(), z["eval_key"].tolist()
        assert str(z["clip_tag"]) == "tiny" and str(z["pretrained"]) == checkpoint
    assert (sets, keys) == (["cars", "cars", "pets", "pets"], ["s0000", "s0001", "s0000", "s0001"])
    assert emb.dtype == np.float32 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)

    stored = {}
    for f in sorted((root / "columns" / "clip_tiny").glob("*.parquet")):
        t = pq.read_table(f, columns=["uid", "tiny_img"]).to_pylist()
        stored.update({r["uid"]: np.asarray(r["tiny_img"], np.float32) for r in t if r["tiny_img"] is not None})
    np.testing.assert_allclose(emb[0], stored[uids[2]], atol=1e-3)  # a byte copy: the pool's own embedding
    np.testing.assert_allclose(emb[3], stored[uids[9]], atol=1e-3)

    assert curate_main(["decontaminate", "--pool", str(root), "--eval-dir", str(evals), "--max-distance", "0",
                        "--eval-embeddings", str(npz), "--min-cosine", "0.999", "--arch", "tiny"]) == 0
    report = pq.read_table(root / "decontamination_report.parquet").to_pylist()
    cosine = sorted((r["pool_uid"], r["eval_set"], r["eval_key"]) for r in report if r["method"] == "cosine")
    assert (uids[2], "cars", "s0000") in cosine and (uids[9], "pets", "s0001") in cosine
    assert {u for u, _, _ in cosine} <= {uids[2], uids[9]} | {u for u in uids if np.dot(stored.get(u, np.zeros_like(emb[0])), emb[1]) >= 0.999
                                                                  or np.dot(stored.get(u, np.zeros_like(emb[0])), emb[2]) >= 0.999}


def test_embed_evals_errors_are_one_line(tmp_path, checkpoint, capsys):
    """A missing eval folder and a checkpoint that is not one: exit 2, one line naming the problem, no npz."""
    out = tmp_path / "e.npz"
    assert curate_main(["embed-evals", "--eval-dir", str(tmp_path / "nope"), "--output", str(out),
                        "--model", TINY, "--pretrained", checkpoint]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval folder not found" in err[0]
    evals = tmp_path / "evals"
    _write_eval_set(evals, "cars", [_smooth_png(1)])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert curate_main(["embed-evals", "--eval-dir", str(evals), "--output", str(out), "--model", TINY, "--pretrained", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".e.npz*"))
