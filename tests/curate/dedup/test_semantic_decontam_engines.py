"""`curate dedup --method semantic` and `curate decontaminate` on the local engine, a real Dask LocalCluster and a
real Spark session: planted duplicates and eval copies are found, and every engine writes the same columns,
report and statistics (rows without embeddings or hashes, malformed values, an empty partition, an empty
phash file and bad input included)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curate.dedup.dask_job as dask_job
import curate.dedup.semantic as sem
from curate.cli import main as curate_main
from curate.decontaminate import hash_eval_sets, run_decontaminate
from curate.dedup.run import DedupError, run_dedup
from curate.engines import EngineTaskError, make_engine
from tests.curate.dedup.synth import planted_embeddings, write_embedding_pool
from tests.curate.dedup.test_decontaminate_and_filters import _smooth_png, _write_eval_set
from tests.curate.helpers import java_available

SIZES = [50, 0, 40, None]  # pool partitions; the last one's embeddings live in the column store
D = 6
MIN_COSINE = 0.95
SEM_KEYS = ("rows", "rows_grouped", "groups", "groups_with_duplicates", "largest_group", "kept", "removed_as_duplicates",
            "malformed", "malformed_examples", "without_value", "embedding_column", "clusters", "pairs", "kmeans_sample",
            "score_column", "eps", "arch")
DECONTAM_KEYS = ("eval_images", "eval_images_failed", "pool_rows", "pool_rows_checked", "pool_rows_without_phash",
                 "pool_rows_malformed_phash", "phash_matches", "cosine_matches", "contaminated", "per_eval_set")


def _read(folder):
    files = sorted(folder.glob("*.parquet"))
    return [f.name for f in files], pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()


def _semantic(root, engine, keep):
    # a small training sample (3 clusters x 20 rows, floor 10 per centroid = 60 rows of 130), so the sample is
    # really drawn; the rule runs in the driver, so the patch reaches every engine
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sem, "POINTS_PER_CENTROID", 20)
        mp.setattr(sem, "MIN_POINTS_PER_CENTROID", 10)
        mp.setattr(dask_job, "EMBEDDING_BYTES_PER_PARTITION", 1000)  # several shuffle partitions on Dask
        stats = run_dedup(root, "semantic", engine=engine, eps=0.01, clusters=3, keep=keep)
    return _read(root / "columns" / "dedup_semantic"), {k: stats.get(k) for k in SEM_KEYS}


def _decontam(root, evals, engine):
    stats = run_decontaminate(root, evals, engine=engine, max_distance=D, min_cosine=MIN_COSINE,
                              eval_embeddings=str(root.parent / "eval_emb.npz"))
    report = pq.read_table(root / "decontamination_report.parquet").to_pylist()
    return _read(root / "columns" / "decontam"), report, {k: stats.get(k) for k in DECONTAM_KEYS}


def _outputs(root, evals, engine):
    return {"first": _semantic(root, engine, "first"), "highest_clip_score": _semantic(root, engine, "highest_clip_score"),
            "decontam": _decontam(root, evals, engine)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A pool of 130 rows in partitions of 50, 0, 40 and 40 (the last with its embeddings in the column store,
    two of them null), planted semantic duplicates and chains, a NaN and a zero embedding; phash columns in
    other files (plus an empty one) with copies of eval images, malformed and missing hashes, and three pool
    rows missing; two eval sets and eval embeddings that copy three pool rows. The local engine's outputs."""
    tmp = tmp_path_factory.mktemp("world")
    root, evals = tmp / "pool", tmp / "evals"
    emb, groups = planted_embeddings(96, 12, seed=5)
    n = len(emb)
    sizes = [s if s is not None else n - 90 for s in SIZES]
    planted = {m for g in groups for m in g}
    free = [r for r in range(n) if r not in planted]
    nan_row, zero_row, null_rows = free[3], free[60], (free[-1], free[-5])
    assert all(r >= 90 for r in null_rows) and nan_row < 90 and zero_row < 90
    emb[nan_row, 4] = np.nan
    emb[zero_row] = 0
    meta = write_embedding_pool(root, emb, sizes, seed=5, store=(3,), null_rows=null_rows)
    uids = meta.column("uid").to_pylist()

    # eval sets and pool hashes planted around the eval images' hashes
    _write_eval_set(evals, "cifar10", [_smooth_png(s) for s in range(6)])
    _write_eval_set(evals, "vtab-dtd", [_smooth_png(s) for s in range(10, 14)])
    eval_table, _ = hash_eval_sets(evals)
    eval_hashes = eval_table.column("phash").to_numpy().view(np.uint64)
    rng = np.random.default_rng(55)  # not 5: that stream made the pool's embeddings
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    for e, r, bits in ((0, 7, 0), (0, 51, D), (3, 60, 2), (7, 100, 1), (8, 2, D + 1), (8, 120, 4)):
        hashes[r] = eval_hashes[e] ^ np.uint64((1 << bits) - 1)  # distance `bits` (D + 1: just too far)
    hexes = [f"{int(h):016x}" for h in hashes]
    hexes[11], hexes[12], hexes[30] = "not-a-hash", None, None
    store_rows = list(range(n - 3))  # the last three pool rows never got a pHash
    d = root / "columns" / "phash"
    d.mkdir(parents=True)
    for name, rows in (("00000000", store_rows[:45]), ("00000001", store_rows[45:45]), ("00000002", store_rows[45:110]),
                       ("00000003", store_rows[110:])):
        pq.write_table(pa.table({"uid": pa.array([uids[r] for r in rows], pa.string()),
                                 "phash": pa.array([hexes[r] for r in rows], pa.string())}), d / f"{name}.parquet")
    # eval embeddings: near copies of a pool row in an npz, one in the column store, one without a pHash, and noise
    copies = [free[10], next(r for r in free if 90 <= r < n - 3 and r not in null_rows),
              next(r for r in free if r >= n - 3 and r not in null_rows)]
    q = np.concatenate([emb[copies].astype(np.float32) * 3 + rng.normal(scale=0.01, size=(3, emb.shape[1])),
                        rng.normal(size=(4, emb.shape[1]))]).astype(np.float32)
    np.savez(tmp / "eval_emb.npz", embeddings=q, eval_set=np.array(["cars"] * 7), eval_key=np.array([f"e{k}" for k in range(7)]))

    local = _outputs(root, evals, None)
    truth = {"emb": emb, "groups": groups, "uids": uids, "hexes": hexes, "store_rows": store_rows, "eval_hashes": eval_hashes,
             "eval_table": eval_table, "q": q, "copies": copies, "bad": {nan_row: "non-finite values", zero_row: "zero vector"},
             "null_rows": null_rows}
    return root, evals, local, truth


def test_local_semantic_finds_the_planted_groups(world):
    root, _, local, truth = world
    (files, rows), stats = local["first"]
    assert files == [f"{p:08d}.parquet" for p in range(4)]  # one per partition, the empty one too
    n = len(truth["emb"])
    want = np.arange(n).astype(object)
    for g in truth["groups"]:
        want[g] = min(g)
    for r in list(truth["bad"]) + list(truth["null_rows"]):
        want[r] = None
    assert [r["dedup_semantic_group"] for r in rows] == want.tolist()  # chains joined only through their middle
    assert [r["uid"] for r in rows] == truth["uids"]
    assert [r["dedup_semantic_keep"] for r in rows] == [None if w is None else w == k for k, w in enumerate(want)]
    assert stats["groups_with_duplicates"] == len(truth["groups"]) and stats["largest_group"] == 3
    assert stats["malformed"] == 2 and stats["without_value"] == 2 and stats["rows"] == n
    assert sorted(e["semantic"] for e in stats["malformed_examples"]) == sorted(truth["bad"].values())
    assert stats["kmeans_sample"] < n - 4 and stats["clusters"] == 3  # trained on a sample, not the pool
    (_, rows_hi), stats_hi = local["highest_clip_score"]
    assert stats_hi["score_column"] == "clip_l14_similarity_score"
    assert [r["dedup_semantic_group"] for r in rows_hi] == want.tolist()


def test_local_decontaminate_finds_the_planted_copies(world):
    root, _, local, truth = world
    (files, cols), report, stats = local["decontam"]
    assert files == [f"{k:08d}.parquet" for k in range(4)]
    uids, hexes, ev = truth["uids"], truth["hexes"], truth["eval_hashes"]
    et = truth["eval_table"]
    want_phash = []
    for e, h in enumerate(ev):
        for r in truth["store_rows"]:
            if hexes[r] is not None and len(hexes[r]) == 16 and all(c in "0123456789abcdef" for c in hexes[r]):
                dist = int(np.bitwise_count(np.uint64(int(hexes[r], 16)) ^ h))
                if dist <= D:
                    want_phash.append((uids[r], et.column("eval_set")[e].as_py(), et.column("eval_key")[e].as_py(), dist))
    assert len(want_phash) >= 5  # the planted copies (distance 0 to D), not the one at D + 1
    got = [(r["pool_uid"], r["eval_set"], r["eval_key"], r["distance"]) for r in report if r["method"] == "phash"]
    assert got == want_phash
    unit = truth["emb"].astype(np.float16).astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    q = truth["q"] / np.linalg.norm(truth["q"], axis=1, keepdims=True)
    sims = q @ np.nan_to_num(unit).T
    sims[:, list(truth["null_rows"])] = -1
    want_cos = [(uids[r], f"e{e}") for e, r in zip(*np.nonzero(sims >= MIN_COSINE))]
    assert [(r["pool_uid"], r["eval_key"]) for r in report if r["method"] == "cosine"] == want_cos
    assert {u for u, _ in want_cos} == {uids[r] for r in truth["copies"]}
    bad = {uids[r] for r in (11, 12, 30)}
    flagged = {u for u, *_ in want_phash} | {u for u, _ in want_cos}
    assert [r["uid"] for r in cols] == [uids[r] for r in truth["store_rows"]]
    assert [r["contaminated"] for r in cols] == [None if r["uid"] in bad and r["uid"] not in flagged else r["uid"] in flagged
                                                 for r in cols]
    assert stats["pool_rows_malformed_phash"] == 1 and stats["pool_rows_without_phash"] == 2
    assert stats["contaminated"] == len(flagged - {uids[truth["copies"][2]]})  # that copy has no pHash row to mark
    saved = json.loads((root / "columns" / "decontam_stats.json").read_text())
    assert saved["engine"] == "local"


@pytest.fixture(scope="module")
def dask_engine():
    with make_engine("dask", processes=2) as engine:
        yield engine


@pytest.fixture(scope="module")
def spark_engine():
    if not java_available():
        pytest.skip("Spark needs Java 17+")
    with make_engine("spark", processes=2) as engine:
        yield engine


def test_dask_writes_what_the_local_engine_writes(world, dask_engine):
    root, evals, local, _ = world
    got = _outputs(root, evals, dask_engine)
    assert got == local


def test_spark_writes_what_the_local_engine_writes(world, spark_engine):
    root, evals, local, _ = world
    got = _outputs(root, evals, spark_engine)
    assert got == local


@pytest.mark.parametrize("engine_name", ["local", "dask", "spark"])
def test_bad_input_fails_on_every_engine(tmp_path, engine_name, request):
    engine = None if engine_name == "local" else request.getfixturevalue(f"{engine_name}_engine")
    emb, _ = planted_embeddings(20, 2, seed=1)
    root = tmp_path / "pool"
    write_embedding_pool(root, emb, [10, len(emb) - 10], seed=1)
    np.savez(root / "metadata" / "00000001.npz", l14_img=emb[:3])  # fewer rows than its parquet
    with pytest.raises(DedupError, match="00000001.npz: holds 3 rows"):
        run_dedup(root, "semantic", engine=engine, eps=0.01)
    (root / "metadata" / "00000001.npz").unlink()  # and now no embeddings at all for that partition
    with pytest.raises(DedupError, match="needs CLIP image embeddings"):
        run_dedup(root, "semantic", engine=engine, eps=0.01, arch="l14")
    assert not (root / "columns" / "dedup_semantic").exists() and not (root / ".dedup_semantic.staging").exists()
    # decontaminate: eval embeddings of another width than the pool's, found by the tasks
    np.savez(root / "metadata" / "00000001.npz", l14_img=emb[10:])
    (root / "columns" / "phash").mkdir(parents=True)
    pq.write_table(pa.table({"uid": ["x"], "phash": ["0123456789abcdef"]}), root / "columns" / "phash" / "00000000.parquet")
    _write_eval_set(tmp_path / "evals", "cars", [_smooth_png(1)])
    np.savez(tmp_path / "q.npz", embeddings=np.ones((1, 5)), eval_set=np.array(["cars"]), eval_key=np.array(["e0"]))
    with pytest.raises((DedupError, EngineTaskError), match="width"):
        run_decontaminate(root, tmp_path / "evals", engine=engine, min_cosine=0.9, eval_embeddings=str(tmp_path / "q.npz"))
    assert not (root / "columns" / "decontam").exists()


def test_cli_runs_both_commands_on_dask(world, tmp_path, capsys):
    root, evals, local, _ = world
    assert curate_main(["decontaminate", "--pool", str(root), "--eval-dir", str(evals), "--max-distance", str(D),
                        "--min-cosine", str(MIN_COSINE), "--eval-embeddings", str(root.parent / "eval_emb.npz"),
                        "--engine", "dask", "--processes", "2"]) == 0
    assert "s on dask" in capsys.readouterr().out
    assert _read(root / "columns" / "decontam") == local["decontam"][0]
    run_dedup(root, "semantic", eps=0.01, clusters=1)  # one cluster: every pair compared
    want = _read(root / "columns" / "dedup_semantic")
    assert curate_main(["dedup", "--pool", str(root), "--method", "semantic", "--eps", "0.01", "--clusters", "1",
                        "--engine", "dask", "--processes", "2"]) == 0
    assert "on dask" in capsys.readouterr().out
    assert _read(root / "columns" / "dedup_semantic") == want


def test_malformed_embedding_inputs_get_clear_errors(tmp_path):
    """Eval embeddings without --min-cosine, an eval npz missing arrays or with mismatched lengths, and a pool
    embedding column that is not one fixed-width vector per row: each a DedupError naming the problem."""
    emb, _ = planted_embeddings(20, 2, seed=2)
    root = tmp_path / "pool"
    write_embedding_pool(root, emb, [10, len(emb) - 10], seed=2)
    (root / "columns" / "phash").mkdir(parents=True)
    pq.write_table(pa.table({"uid": ["x"], "phash": ["0123456789abcdef"]}), root / "columns" / "phash" / "00000000.parquet")
    evals = tmp_path / "evals"
    _write_eval_set(evals, "cars", [_smooth_png(2)])
    q = tmp_path / "q.npz"
    np.savez(q, embeddings=np.ones((1, emb.shape[1])), eval_set=np.array(["cars"]), eval_key=np.array(["e0"]))
    with pytest.raises(DedupError, match="--eval-embeddings needs --min-cosine"):
        run_decontaminate(root, evals, eval_embeddings=str(q))
    np.savez(q, embeddings=np.ones((1, emb.shape[1])), eval_set=np.array(["cars"]))
    with pytest.raises(DedupError, match="expected arrays embeddings, eval_set, eval_key"):
        run_decontaminate(root, evals, min_cosine=0.9, eval_embeddings=str(q))
    np.savez(q, embeddings=np.ones((2, emb.shape[1])), eval_set=np.array(["cars"]), eval_key=np.array(["e0"]))
    with pytest.raises(DedupError, match=r"must be \(N, D\) with N eval_set and eval_key entries"):
        run_decontaminate(root, evals, min_cosine=0.9, eval_embeddings=str(q))
    assert not (root / "columns" / "decontam").exists()

    # a variable-length list column in the partition's parquet instead of a fixed-size vector
    part = root / "metadata" / "00000000.parquet"
    t = pq.read_table(part)
    pq.write_table(t.append_column("l14_img", pa.array([[0.5] * (1 + i % 3) for i in range(t.num_rows)], pa.list_(pa.float32()))), part)
    with pytest.raises(DedupError, match="not a fixed-size list"):
        run_dedup(root, "semantic", eps=0.01)
    assert not (root / "columns" / "dedup_semantic").exists()
