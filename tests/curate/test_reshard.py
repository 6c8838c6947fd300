import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest

from curate.engines import LocalEngine
from curate.pool import Pool
from curate.reshard import ReshardError, reshard
from curate.subset import SubsetFileError, write_subset
from curate.uids import uids_to_pairs
from tests.curate.helpers import add_member, tar_samples, write_shard_pool


def _subset(tmp_path, uids, name="subset.npy"):
    return write_subset(tmp_path / name, uids_to_pairs(uids))


def _output_samples(out):
    samples = []
    for tar in sorted(out.glob("*.tar")):
        samples += tar_samples(tar)
    return samples


@pytest.fixture
def pool(tmp_path):
    meta = write_shard_pool(tmp_path / "pool", [40, 35, 30], seed=5, failed_per_shard=2)
    return tmp_path / "pool", meta


def test_output_holds_exactly_the_subset_multiset(tmp_path, pool):
    root, meta = pool
    uids = meta.column("uid").to_pylist()
    rng = np.random.default_rng(0)
    chosen = list(rng.choice(uids, 50, replace=False)) + uids[:3] + uids[:1]  # uids[0] three times, 1-2 twice
    subset = _subset(tmp_path, chosen)
    with LocalEngine(2) as engine:
        stats = reshard(Pool(root), subset, tmp_path / "out", engine, shard_size=16)
    samples = _output_samples(tmp_path / "out")
    written = Counter(json.loads(files["json"])["uid"] for _, files in samples)
    downloaded = {u for u in uids if any(u == json.loads(f["json"])["uid"] for _, f in tar_samples_all(root))}
    want = Counter(u for u in chosen if u in downloaded)
    assert written == want
    # keys follow DataComp's resharder: {uid}-{j}
    keys = Counter(k for k, _ in samples)
    assert all(keys[f"{u}-{j}"] == 1 for u, c in want.items() for j in range(c))
    assert stats["written"] == sum(want.values())
    assert stats["written"] + stats["not_downloaded"] + stats["lost_to_corrupt_shards"] == len(chosen)
    assert stats["reconciled"]
    sizes = json.loads((tmp_path / "out" / "sizes.json").read_text())
    assert sum(sizes.values()) == stats["written"] and all(v <= 16 for v in sizes.values())
    assert list(sizes.values())[:-1] == [16] * (len(sizes) - 1)
    for name, n in sizes.items():
        assert json.loads((tmp_path / "out" / name.replace(".tar", "_stats.json")).read_text())["successes"] == n
    assert not (tmp_path / "out" / "_tmp").exists()


def tar_samples_all(root):
    out = []
    for t in sorted((root / "shards").glob("*.tar")):
        out += tar_samples(t)
    return out


def test_truncated_shard_is_named_with_the_samples_it_cost(tmp_path, pool):
    root, meta = pool
    shard = root / "shards" / "00000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    uids = meta.column("uid").to_pylist()
    subset = _subset(tmp_path, uids)
    with LocalEngine(1) as engine:
        stats = reshard(Pool(root), subset, tmp_path / "out", engine, shard_size=100)
    [bad] = stats["corrupt_shards"]
    assert bad["shard"] == "00000001.tar" and bad["error"]
    assert bad["expected_samples"] == 35 and 0 < bad["samples_lost"] <= 35
    assert bad["samples_read"] + bad["samples_lost"] == 35
    assert stats["lost_to_corrupt_shards"] == bad["samples_lost"]
    assert stats["not_downloaded"] == 6  # two failed downloads per shard
    assert stats["written"] + stats["not_downloaded"] + stats["lost_to_corrupt_shards"] == len(uids)
    assert stats["reconciled"]


def test_shard_without_stats_file_is_not_taken_as_whole(tmp_path, pool):
    root, meta = pool
    (root / "shards" / "00000002_stats.json").unlink()  # as if the downloader was killed mid-shard
    subset = _subset(tmp_path, meta.column("uid").to_pylist())
    with LocalEngine(1) as engine:
        stats = reshard(Pool(root), subset, tmp_path / "out", engine)
    assert stats["incomplete_shards_skipped"] == ["00000002.tar"]
    assert stats["written"] == 75 and stats["reconciled"]


def test_subset_uids_outside_the_pool_are_an_error(tmp_path, pool):
    root, meta = pool
    subset = _subset(tmp_path, meta.column("uid").to_pylist()[:3] + ["f" * 32])
    with LocalEngine(1) as engine, pytest.raises(SubsetFileError, match="1 uids are not in the pool.*ffff"):
        reshard(Pool(root), subset, tmp_path / "out", engine)


def test_existing_output_needs_overwrite(tmp_path, pool):
    root, meta = pool
    subset = _subset(tmp_path, meta.column("uid").to_pylist()[:5])
    with LocalEngine(1) as engine:
        reshard(Pool(root), subset, tmp_path / "out", engine)
        with pytest.raises(ReshardError, match="--overwrite"):
            reshard(Pool(root), subset, tmp_path / "out", engine)
        reshard(Pool(root), subset, tmp_path / "out", engine, overwrite=True)


def test_hostile_member_names_never_become_paths(tmp_path, pool):
    root, meta = pool
    uid = meta.column("uid")[0].as_py()
    shard = root / "shards" / "00000000.tar"
    with tarfile.open(shard, "a") as tar:  # append a sample whose names try to escape
        add_member(tar, "../../escape.json", json.dumps({"uid": uid}).encode())
        add_member(tar, "/abs/evil.jpg", b"x")
        add_member(tar, "k9.j/../../x", b"y")
        link = tarfile.TarInfo("lnk.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    subset = _subset(tmp_path, [uid])
    work = tmp_path / "work"
    work.mkdir()
    with LocalEngine(1) as engine:
        stats = reshard(Pool(root), subset, work / "out", engine)
    assert not (tmp_path / "escape.json").exists() and not (work / "escape.json").exists()
    names = sorted(p.name for p in (work / "out").iterdir())
    assert names == ["00000000.tar", "00000000_stats.json", "reshard_stats.json", "sizes.json"]
    with tarfile.open(work / "out" / "00000000.tar") as tar:
        assert all(m.name.startswith(f"{uid}-") and "/" not in m.name for m in tar.getmembers())
    assert stats["written"] >= 1
