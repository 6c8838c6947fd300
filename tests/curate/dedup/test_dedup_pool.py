"""`curate dedup` on pools: columns written, keep rules, sha256, semantic, bad input, all engines agree."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.cli import main as curate_main
from curate.dedup.run import DedupError, run_dedup
from tests.curate.dedup.synth import planted_hashes, reference_groups, write_phash_pool
from tests.curate.helpers import java_available


def _read(root, method):
    files = sorted((root / "columns" / f"dedup_{method}").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _pool(tmp_path, d=6, n_random=400, clusters=40, seed=1):
    values, planted = planted_hashes(n_random, clusters, d, seed=seed)
    hexes = [f"{int(v):016x}" for v in values]
    meta = write_phash_pool(tmp_path / "pool", hexes, files=3, seed=seed)
    return tmp_path / "pool", values, planted, meta


def test_phash_groups_match_brute_force_and_keep_first(tmp_path):
    root, values, planted, _ = _pool(tmp_path)
    stats = run_dedup(root, "phash", max_distance=6)
    t = _read(root, "phash")
    assert [f.name for f in sorted((root / "columns" / "dedup_phash").glob("*"))] == [f"{i:08d}.parquet" for i in range(3)]
    assert t.column_names == ["uid", "dedup_phash_group", "dedup_phash_keep"]
    assert t.schema.field("dedup_phash_group").type == pa.int64()
    groups = np.array(t.column("dedup_phash_group").to_pylist())
    np.testing.assert_array_equal(groups, reference_groups(values, 6))
    keep = np.array(t.column("dedup_phash_keep").to_pylist())
    assert keep.tolist() == (groups == np.arange(len(groups))).tolist()  # first = smallest row of each group
    assert stats["kept"] == len(set(groups.tolist())) and stats["malformed"] == 0
    saved = json.loads((root / "columns" / "dedup_phash_stats.json").read_text())
    assert saved["removed_as_duplicates"] == len(values) - stats["kept"]


def test_keep_highest_clip_score(tmp_path):
    root, values, planted, meta = _pool(tmp_path, seed=2)
    run_dedup(root, "phash", max_distance=6, keep="highest_clip_score")
    t = _read(root, "phash")
    score = dict(zip(meta.column("uid").to_pylist(), meta.column("clip_l14_similarity_score").to_pylist()))
    groups = t.column("dedup_phash_group").to_pylist()
    by_group = {}
    for uid, g, k in zip(t.column("uid").to_pylist(), groups, t.column("dedup_phash_keep").to_pylist()):
        by_group.setdefault(g, []).append((uid, k))
    assert sum(len(m) > 1 for m in by_group.values()) >= 30
    for members in by_group.values():
        kept = [u for u, k in members if k]
        assert len(kept) == 1
        assert score[kept[0]] == max(score[u] for u, _ in members)


def test_malformed_and_missing_hashes_are_reported(tmp_path, capsys):
    values, _ = planted_hashes(50, 5, 4, seed=3)
    hexes = [f"{int(v):016x}" for v in values]
    hexes[3], hexes[10] = "not-a-hash", "abc"
    hexes[7] = None
    root = tmp_path / "pool"
    write_phash_pool(root, hexes, files=2, seed=3)
    assert curate_main(["dedup", "--pool", str(root), "--max-distance", "4"]) == 0
    out = capsys.readouterr()
    assert "2 malformed phash values" in out.err and "not-a-hash" in out.err
    assert "1 rows have no phash value" in out.out and "unidentified" in out.out
    stats = json.loads((root / "columns" / "dedup_phash_stats.json").read_text())
    assert stats["malformed"] == 2 and stats["without_value"] == 1
    t = _read(root, "phash")
    keep = t.column("dedup_phash_keep").to_pylist()
    assert keep[3] is None and keep[10] is None and keep[7] is None and t.num_rows == len(hexes)


def test_a_distance_that_pairs_random_hashes_by_chance_warns_with_a_safer_one(tmp_path, capsys):
    """3,000 uniform random hashes at D = 17 have ~510 pairs by chance alone (hamming.chance_pairs), more than 1%
    of them: the CLI warns and names D = 14 (~16 chance pairs); the pairs it found agree with that expectation.
    At the default D = 4 there is no warning."""
    rng = np.random.default_rng(11)
    hexes = [f"{int(v):016x}" for v in rng.integers(0, 2**64, 3000, dtype=np.uint64)]
    root = tmp_path / "pool"
    write_phash_pool(root, hexes, files=2, seed=11)
    assert curate_main(["dedup", "--pool", str(root), "--max-distance", "17", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "~510 pairs of them would lie within D=17 bits by chance" in err and "--max-distance 14 keeps" in err
    stats = json.loads((root / "columns" / "dedup_phash_stats.json").read_text())
    assert stats["chance_pairs_if_uniform"] == 510 and stats["chance_pairs_below_1pct_at_max_distance"] == 14
    assert abs(stats["pairs_of_distinct_hashes"] - 510) < 5 * 510 ** 0.5  # found by the search, ~Poisson around it
    assert curate_main(["dedup", "--pool", str(root), "--no-progress"]) == 0
    assert "by chance" not in capsys.readouterr().err
    stats = json.loads((root / "columns" / "dedup_phash_stats.json").read_text())
    assert stats["chance_pairs_if_uniform"] == 0 and "chance_pairs_below_1pct_at_max_distance" not in stats


def test_missing_phash_column_names_the_stage(tmp_path, capsys):
    (tmp_path / "pool" / "metadata").mkdir(parents=True)
    with pytest.raises(DedupError, match="curate stage --pool .* --signals phash"):
        run_dedup(tmp_path / "pool", "phash")
    assert curate_main(["dedup", "--pool", str(tmp_path / "pool")]) == 2
    assert "curate stage" in capsys.readouterr().err


def test_sha256_exact_duplicates(tmp_path):
    root = tmp_path / "pool"
    rng = np.random.default_rng(0)
    digests = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(20)]
    values = [digests[k] for k in [0, 1, 2, 0, 3, 1, 0, 4]] + [None, "zz"]
    write_phash_pool(root, [None] * len(values), files=1)
    meta_uids = pq.read_table(root / "metadata" / "00000000.parquet").column("uid").to_pylist()[:len(values)]
    (root / "columns" / "sha256").mkdir(parents=True)
    pq.write_table(pa.table({"uid": meta_uids, "sha256": pa.array(values, pa.string()), "status": ["ok"] * len(values)}),
                   root / "columns" / "sha256" / "00000000.parquet")
    stats = run_dedup(root, "sha256")
    t = _read(root, "sha256")
    assert t.column("dedup_sha256_group").to_pylist() == [0, 1, 2, 0, 4, 1, 0, 7, None, None]
    assert t.column("dedup_sha256_keep").to_pylist() == [True, True, True, False, True, False, False, True, None, None]
    assert stats["malformed"] == 1 and stats["without_value"] == 1


def test_semantic_on_synthetic_embeddings(tmp_path):
    root = tmp_path / "pool"
    rng = np.random.default_rng(0)
    n_centres, d = 40, 64
    centres = rng.normal(size=(n_centres, d))
    emb, truth = [], []
    for c in range(n_centres):
        emb.append(centres[c])
        truth.append(c)
        if c % 2 == 0:  # a near copy (cosine ~0.999) of every other centre
            emb.append(centres[c] + rng.normal(scale=0.03, size=d))
            truth.append(c)
    emb = np.array(emb, dtype=np.float16)
    meta_rows = len(emb)
    write_phash_pool(root, [None] * (meta_rows - 1), files=1)
    np.savez(root / "metadata" / "00000000.npz", l14_img=emb)
    stats = run_dedup(root, "semantic", eps=0.01, clusters=4)
    t = _read(root, "semantic")
    groups = t.column("dedup_semantic_group").to_pylist()
    truth = np.array(truth)
    want = [int(np.flatnonzero(truth == truth[i])[0]) for i in range(len(truth))]
    assert groups == want
    assert sum(t.column("dedup_semantic_keep").to_pylist()) == n_centres == stats["kept"]


STAT_KEYS = ("rows", "rows_grouped", "groups", "groups_with_duplicates", "largest_group", "kept", "removed_as_duplicates",
             "malformed", "malformed_examples", "without_value", "without_value_by_status", "distinct_hashes",
             "pairs_of_distinct_hashes", "score_column")


def _engine_pool(tmp_path, n_random, clusters, seed):
    """Planted clusters and chains (a~b, b~c within D=8, a and c not), malformed and missing hashes, a file
    whose rows all lack a hash, and an empty file."""
    values, planted = planted_hashes(n_random, clusters, 8, seed=seed)
    chain = planted[0]
    assert np.bitwise_count(values[chain[0]] ^ values[chain[-1]]) > 8  # only transitivity joins the ends
    hexes = [f"{int(v):016x}" for v in values]
    hexes[5], hexes[11], hexes[17] = "not-a-hash", None, "ABCDEF0123456789"  # upper case parses too
    hexes += [hexes[40], hexes[41]]  # exact repeats
    root = tmp_path / "pool"
    meta = write_phash_pool(root, hexes + [None, None], files=3, seed=seed)
    d = root / "columns" / "phash"
    last = pq.read_table(d / "00000002.parquet")
    k = last.num_rows
    pq.write_table(last.slice(0, k - 2), d / "00000002.parquet")
    pq.write_table(last.slice(k - 2, 2), d / "00000003.parquet")  # no usable hash in the whole file
    pq.write_table(last.slice(0, 0), d / "00000004.parquet")  # no rows at all
    # sha256 columns for the same rows: repeated digests (some in upper case), a malformed one, a missing one
    rng = np.random.default_rng(seed)
    digests = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(60)]
    (root / "columns" / "sha256").mkdir()
    for f in sorted(d.glob("*.parquet")):
        t = pq.read_table(f)
        sha = [digests[int(k)] for k in rng.integers(0, len(digests), t.num_rows)]
        if t.num_rows > 3:
            sha[0], sha[1], sha[2] = sha[2].upper(), "xyz", None
        pq.write_table(pa.table({"uid": t.column("uid"), "sha256": pa.array(sha, pa.string())}), root / "columns" / "sha256" / f.name)
    return root, values, chain


def _run_all(root, engine_name, runs=(("phash", "first"), ("phash", "highest_clip_score"), ("sha256", "highest_clip_score")),
             processes=1):
    from curate.engines import make_engine

    out = {}
    with make_engine(engine_name, processes=processes) as engine:
        for method, keep in runs:
            stats = run_dedup(root, method, engine=engine if engine_name != "local" else None, max_distance=8, keep=keep)
            files = sorted(p.name for p in (root / "columns" / f"dedup_{method}").glob("*"))
            out[method, keep] = (files, _read(root, method).to_pylist(), {k: stats.get(k) for k in STAT_KEYS})
    return out


def _check_local(root, values, chain, local):
    files, rows, stats = local["sha256", "highest_clip_score"]
    assert files == [f"{i:08d}.parquet" for i in range(5)] and stats["malformed"] == 3 and stats["without_value"] == 3
    files, rows, stats = local["phash", "first"]
    assert files == [f"{i:08d}.parquet" for i in range(5)]
    groups = [r["dedup_phash_group"] for r in rows]
    assert groups[chain[0]] == groups[chain[-1]] == chain[0]
    assert groups[5] is None and groups[11] is None and groups[-1] is None and groups[-2] is None
    assert stats["malformed"] == 1 and stats["without_value"] == 3 and stats["groups_with_duplicates"] >= 20


def test_dask_engine_gets_the_same_groups_and_keepers(tmp_path, monkeypatch):
    import curate.dedup.dask_job as dask_job

    monkeypatch.setattr(dask_job, "ROWS_PER_PARTITION", 150)  # several partitions: real shuffles
    monkeypatch.setattr(dask_job, "GROUP_ROWS_PER_PARTITION", 500)  # and more of them for the block groups
    root, values, chain = _engine_pool(tmp_path, n_random=500, clusters=45, seed=4)
    local = _run_all(root, "local")
    _check_local(root, values, chain, local)
    assert _run_all(root, "dask") == local


@pytest.mark.skipif(not java_available(), reason="Spark needs Java 17+")
def test_spark_engine_gets_the_same_groups_and_keepers(tmp_path):
    root, values, chain = _engine_pool(tmp_path, n_random=300, clusters=30, seed=6)
    local = _run_all(root, "local")
    _check_local(root, values, chain, local)
    assert _run_all(root, "spark", processes=2) == local
