"""Decontamination against a generated eval set, and the dedup / decontaminated filters through `curate run`."""

import io
import json
import tarfile

import imagehash
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from curate.cli import main as curate_main
from curate.dedup.run import run_dedup
from curate.engines import LocalEngine
from curate.pool import Pool
from curate.run import run_filters
from curate.stage import run_stage
from curate.subset import read_subset
from curate.uids import uids_to_pairs
from filters.registry import build_filter
from tests.curate.dedup.synth import planted_hashes, write_phash_pool
from tests.curate.helpers import add_member, tar_samples, write_shard_pool


def _smooth_png(seed: int) -> bytes:
    """A smooth gradient image (pHash is stable under re-encoding, unlike noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64]
    a, b, c = rng.uniform(-3, 3, 3)
    img = (127 + 60 * np.sin(a * x / 20 + b * y / 20 + c) + 40 * np.cos(b * x / 13 - c * y / 17)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _write_eval_set(root, name, images):
    d = root / f"wds_{name}_test" / "test"
    d.mkdir(parents=True)
    (d / "nshards.txt").write_text("1\n")
    (d.parent / "classnames.txt").write_text("a\nb\n")
    with tarfile.open(d / "0.tar", "w") as tar:
        for k, data in enumerate(images):
            add_member(tar, f"s{k:04d}.png", data)
            add_member(tar, f"s{k:04d}.cls", b"0")


def test_decontaminate_finds_copied_eval_images(tmp_path, capsys):
    root = tmp_path / "pool"
    write_shard_pool(root, [12, 10], seed=7, failed_per_shard=1)
    with LocalEngine(1) as engine:
        run_stage(Pool(root), ["phash"], engine)
    pool_images = {}
    for t in sorted((root / "shards").glob("*.tar")):
        for _, files in tar_samples(t):
            pool_images[json.loads(files["json"])["uid"]] = files["jpg"]
    uids = list(pool_images)
    evals = tmp_path / "evals"
    copied = [pool_images[u] for u in uids[:3]]  # byte copies of three pool images
    recoded = []  # and one pool image re-encoded as PNG at another size (a near copy)
    im = Image.open(io.BytesIO(pool_images[uids[5]])).resize((48, 48))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    recoded.append(buf.getvalue())
    _write_eval_set(evals, "cifar10", copied + [_smooth_png(s) for s in range(6)])
    _write_eval_set(evals, "vtab-dtd", recoded + [_smooth_png(s) for s in range(10, 14)])
    d = 6
    assert curate_main(["decontaminate", "--pool", str(root), "--eval-dir", str(evals), "--max-distance", str(d)]) == 0
    assert "contaminated pool samples" in capsys.readouterr().out
    # reference: imagehash on every pool and eval image, all pairs
    eval_hashes = [(name, k, imagehash.phash(Image.open(io.BytesIO(b))))
                   for name, imgs in (("cifar10", copied + [_smooth_png(s) for s in range(6)]),
                                      ("vtab-dtd", recoded + [_smooth_png(s) for s in range(10, 14)]))
                   for k, b in enumerate(imgs)]
    want = set()
    for u, data in pool_images.items():
        h = imagehash.phash(Image.open(io.BytesIO(data)))
        for name, k, e in eval_hashes:
            if h - e <= d:
                want.add((u, name, f"s{k:04d}", h - e))
    report = pq.read_table(root / "decontamination_report.parquet").to_pylist()
    got = {(r["pool_uid"], r["eval_set"], r["eval_key"], r["distance"]) for r in report}
    assert got == want
    assert {u for u, *_ in want} >= set(uids[:3])
    cols = [r for f in sorted((root / "columns" / "decontam").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert {r["uid"] for r in cols if r["contaminated"]} == {u for u, *_ in want}
    assert len(cols) == len(uids)
    # the filter drops exactly those; the never-downloaded metadata rows were not checked
    with LocalEngine(1) as engine:
        stats = run_filters(Pool(root), [build_filter("decontaminated")], tmp_path / "out", engine)
    kept = read_subset(tmp_path / "out" / "subset.npy")
    clean = sorted(set(uids) - {u for u, *_ in want})
    np.testing.assert_array_equal(kept, np.sort(uids_to_pairs(clean)))
    step = stats["steps"][-1]["rejected_by_first_rule"]
    assert step == {"not_checked": 2, "contaminated": len({u for u, *_ in want})}


def test_dedup_filter_composes_with_clip_score(tmp_path, capsys):
    values, _ = planted_hashes(200, 30, 4, seed=9)
    root = tmp_path / "pool"
    meta = write_phash_pool(root, [f"{int(v):016x}" for v in values], files=2, seed=9)
    run_dedup(root, "phash", max_distance=4)
    dedup = {r["uid"]: r["dedup_phash_keep"] for f in sorted((root / "columns" / "dedup_phash").glob("*.parquet"))
             for r in pq.read_table(f).to_pylist()}
    rc = curate_main(["run", "--pool", str(root), "--filter", "dedup", "--filter", "clip_score", "--threshold", "0.25",
                      "--arch", "b32", "--output", str(tmp_path / "out"), "--processes", "1"])
    assert rc == 0
    scores = dict(zip(meta.column("uid").to_pylist(), meta.column("clip_b32_similarity_score").to_pylist()))
    want = sorted(u for u, k in dedup.items() if k and scores[u] is not None and scores[u] >= 0.25)
    np.testing.assert_array_equal(read_subset(tmp_path / "out" / "subset.npy"), np.sort(uids_to_pairs(want)))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    dstep = stats["steps"][1]
    assert dstep["filter"] == "dedup"
    assert dstep["rejected_by_first_rule"] == {"not_deduplicated": 1, "duplicate": sum(not k for k in dedup.values())}


def test_decontaminate_by_embedding_cosine(tmp_path):
    root = tmp_path / "pool"
    n = 30
    values, _ = planted_hashes(n, 0, 4, seed=11)
    write_phash_pool(root, [f"{int(v):016x}" for v in values], files=1, seed=11)
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(n + 1, 16)).astype(np.float16)  # metadata has n + 1 rows
    np.savez(root / "metadata" / "00000000.npz", l14_img=emb)
    evals = tmp_path / "evals"
    _write_eval_set(evals, "cars", [_smooth_png(s) for s in range(3)])
    eval_emb = np.stack([emb[4].astype(np.float32) * 2.0, rng.normal(size=16)])  # a scaled copy of pool row 4
    np.savez(tmp_path / "eval_emb.npz", embeddings=eval_emb, eval_set=np.array(["cars", "cars"]), eval_key=np.array(["s0000", "s0001"]))
    assert curate_main(["decontaminate", "--pool", str(root), "--eval-dir", str(evals), "--max-distance", "0",
                        "--eval-embeddings", str(tmp_path / "eval_emb.npz"), "--min-cosine", "0.95"]) == 0
    report = [r for r in pq.read_table(root / "decontamination_report.parquet").to_pylist() if r["method"] == "cosine"]
    uid4 = pq.read_table(root / "metadata" / "00000000.parquet").column("uid")[4].as_py()
    assert [(r["pool_uid"], r["eval_key"]) for r in report] == [(uid4, "s0000")]
    cols = pq.read_table(root / "columns" / "decontam" / "00000000.parquet").to_pylist()
    assert [r["uid"] for r in cols if r["contaminated"]] == [uid4]
