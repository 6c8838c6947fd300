"""Data integrity across commands: outputs never at, inside or around their inputs; a killed reshard is redone
on rerun; no temporaries outlive a finished command; written files follow the user's umask."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import cli
from curate.atomic import atomic_path, is_temporary, write_json
from curate.engines import LocalEngine
from curate.pool import Pool
from curate.reshard import reshard
from curate.subset import write_subset
from curate.uids import uids_to_pairs
from tests.curate.helpers import write_shard_pool


def snapshot(root):
    """Every file and folder under `root`: relative path -> sha256 of the bytes (None for a folder)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def add_clip_columns(pool, tag="t", width=4):
    """A clip column file per shard, as `curate stage --signals clip` writes them (for export-npz)."""
    rng = np.random.default_rng(0)
    for shard in Pool(pool).shards():
        uids = pq.read_table(shard.parquet).column("uid")
        n = len(uids)
        emb = [pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * width).astype(np.float16)), width) for _ in range(2)]
        table = pa.table({"uid": uids, f"clip_{tag}_similarity_score": pa.array(rng.random(n), pa.float32()),
                          f"{tag}_img": emb[0], f"{tag}_txt": emb[1], "status": ["ok"] * n})
        folder = pool / "columns" / f"clip_{tag}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{shard.shard_id:08d}.parquet")


@pytest.fixture
def world(tmp_path):
    pool = tmp_path / "pool"
    meta = write_shard_pool(pool, [12, 10], seed=7, failed_per_shard=1)
    add_clip_columns(pool)
    write_subset(tmp_path / "subset.npy", uids_to_pairs(meta.column("uid").to_pylist()[:15]))
    (tmp_path / "link").symlink_to(pool)
    return tmp_path


COMMANDS = {
    "run": ["run", "--pool", "{pool}", "--filter", "no_filter", "--no-report", "--processes", "1", "--output"],
    "reshard": ["reshard", "--pool", "{pool}", "--subset", "{root}/subset.npy", "--processes", "1", "--overwrite", "--output"],
    "export-npz": ["export-npz", "--pool", "{pool}", "--output"],
}
PLACES = {  # where --output points, and how it overlaps the pool
    "{pool}": "is",
    "{link}": "is",  # a symlink to the pool is the pool
    "{pool}/shards": "is inside",
    "{pool}/metadata": "is inside",
    "{link}/out": "is inside",
    "{root}": "contains",
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_at_inside_or_around_the_pool_is_refused_before_anything_is_written(world, command, place, capsys):
    names = {"pool": world / "pool", "link": world / "link", "root": world}
    before = snapshot(world)
    argv = [a.format(**names) for a in COMMANDS[command]] + [place.format(**names)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--output {place.format(**names)} {PLACES[place]} " in err, err
    assert snapshot(world) == before  # nothing written, nothing removed


def test_outputs_beside_the_pool_and_export_npz_default_are_allowed(world, capsys):
    pool = world / "pool"
    assert cli.main(["run", "--pool", str(pool), "--filter", "no_filter", "--no-report", "--processes", "1",
                     "--output", str(world / "out")]) == 0
    assert cli.main(["reshard", "--pool", str(pool), "--subset", str(world / "subset.npy"), "--processes", "1",
                     "--output", str(world / "resharded")]) == 0
    assert cli.main(["export-npz", "--pool", str(pool)]) == 0  # the pool's own npz folder
    assert sorted(p.name for p in (pool / "npz").iterdir()) == ["00000000.npz", "00000000.parquet", "00000001.npz", "00000001.parquet"]


def test_a_subset_file_inside_the_reshard_output_is_refused(world, capsys):
    out = world / "out"
    out.mkdir()
    write_subset(out / "subset.npy", uids_to_pairs([]))
    with LocalEngine(1) as engine, pytest.raises(ValueError, match="contains the subset file"):
        reshard(Pool(world / "pool"), out / "subset.npy", out, engine)
    assert sorted(p.name for p in out.iterdir()) == ["subset.npy"]


# ---- a killed reshard ---------------------------------------------------------------------------------


def _reshard_cmd(pool, subset, out):
    return [sys.executable, "-m", "curate.cli", "reshard", "--pool", str(pool), "--subset", str(subset), "--output", str(out),
            "--shard-size", "1", "--processes", "1"]


def test_a_killed_reshard_is_redone_on_rerun_to_the_same_bytes(tmp_path):
    pool = tmp_path / "pool"
    meta = write_shard_pool(pool, [150] * 4, seed=3, failed_per_shard=0)
    subset = write_subset(tmp_path / "subset.npy", uids_to_pairs(meta.column("uid").to_pylist()))
    whole = tmp_path / "whole"
    assert subprocess.run(_reshard_cmd(pool, subset, whole), capture_output=True).returncode == 0

    broken = tmp_path / "broken"
    proc = subprocess.Popen(_reshard_cmd(pool, subset, broken), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(broken.glob("*.tar"))) < 20:  # output shards being written
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the kill should land before the reshard ends"
    assert 20 <= len(list(broken.glob("*.tar"))) < 600 and not (broken / "sizes.json").exists()

    out = subprocess.run(_reshard_cmd(pool, subset, broken), capture_output=True, text=True, timeout=300)  # no --overwrite
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unfinished reshard" in out.stdout
    assert snapshot(broken) == snapshot(whole)  # the same shards, sizes.json and stats, and nothing else
    assert not any(is_temporary(p) for p in broken.iterdir())


def test_a_finished_reshard_still_needs_overwrite(world):
    args = ["reshard", "--pool", str(world / "pool"), "--subset", str(world / "subset.npy"), "--processes", "1",
            "--output", str(world / "out")]
    assert cli.main(args) == 0
    assert cli.main(args) == 2  # already holds shards; pass --overwrite
    assert cli.main([*args, "--overwrite"]) == 0


# ---- temporaries --------------------------------------------------------------------------------------


def _plant_stale(folder, name):
    """What `kill -9` during an atomic write leaves: a hidden temporary that nobody holds."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.k1ll3d00.tmp"
    path.write_bytes(b"half a file")
    return path


def test_a_finished_run_leaves_no_temporaries(world):
    out = world / "out"
    planted = [_plant_stale(out, "stats.json"), _plant_stale(out, "subset.npy"),
               _plant_stale(out / "shards", "00000001.tar"), _plant_stale(out / "shards", "00000001_stats.json")]
    assert cli.main(["run", "--pool", str(world / "pool"), "--filter", "no_filter", "--processes", "1",
                     "--output", str(out)]) == 0
    assert not any(p.exists() for p in planted)
    assert not [p for p in out.rglob("*") if is_temporary(p)]


def test_a_finished_export_npz_leaves_no_temporaries(world):
    planted = _plant_stale(world / "npz", "00000000.npz")
    assert cli.main(["export-npz", "--pool", str(world / "pool"), "--output", str(world / "npz")]) == 0
    assert not planted.exists()


def test_a_temporary_being_written_is_left_alone(tmp_path):
    """Only leftovers of dead writers go: a write in progress in another process keeps its temporary."""
    from curate.atomic import remove_stale_temporaries

    stale = _plant_stale(tmp_path, "old.json")
    clean = [sys.executable, "-c", "import sys; from curate.atomic import remove_stale_temporaries as r; "
             "print(len(r(sys.argv[1])))", str(tmp_path)]
    with atomic_path(tmp_path / "live.json") as tmp:
        tmp.write_text("{}")
        out = subprocess.run(clean, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "1" and tmp.exists() and not stale.exists()
    assert (tmp_path / "live.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.json"]
    assert remove_stale_temporaries(tmp_path / "missing") == []


# ---- file modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(world, umask, mode):
    old = os.umask(umask)
    try:
        write_json(world / "a.json", {"x": 1})
        assert cli.main(["run", "--pool", str(world / "pool"), "--filter", "no_filter", "--processes", "1",
                         "--output", str(world / "out")]) == 0
    finally:
        os.umask(old)
    files = [world / "a.json", *[p for p in (world / "out").rglob("*") if p.is_file()]]
    assert {p.name for p in files} >= {"a.json", "subset.npy", "stats.json", "report.html", "00000000.tar", "sizes.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(mode) for p in files}


def test_dedup_and_decontaminate_leave_no_temporaries_of_killed_runs(world):
    from curate.stage import run_stage
    from tests.curate.dedup.test_decontaminate_and_filters import _smooth_png, _write_eval_set

    pool = world / "pool"
    with LocalEngine(1) as engine:
        run_stage(Pool(pool), ["phash", "sha256"], engine)
    _write_eval_set(world / "evals", "cifar10", [_smooth_png(s) for s in range(3)])
    for args in (["dedup", "--method", "sha256"], ["decontaminate", "--eval-dir", str(world / "evals")]):
        planted = [_plant_stale(pool, "decontamination_report.parquet"), _plant_stale(pool / "columns", "stage_stats.json"),
                   _plant_stale(pool / "columns", "dedup_sha256_stats.json")]
        assert cli.main([*args, "--pool", str(pool)]) == 0
        assert not any(p.exists() for p in planted), args
    assert not [p for p in pool.rglob("*") if is_temporary(p)]


def test_a_run_killed_in_its_reshard_step_reruns_to_the_same_shards(tmp_path):
    pool = tmp_path / "pool"
    write_shard_pool(pool, [150] * 4, seed=3, failed_per_shard=0)

    def cmd(out):
        return [sys.executable, "-m", "curate.cli", "run", "--pool", str(pool), "--filter", "no_filter", "--no-report",
                "--shard-size", "1", "--processes", "1", "--output", str(out)]

    assert subprocess.run(cmd(tmp_path / "whole"), capture_output=True).returncode == 0
    broken = tmp_path / "broken"
    proc = subprocess.Popen(cmd(broken), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((broken / "shards").glob("*.tar"))) < 20:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the kill should land before the run ends"
    assert not (broken / "shards" / "sizes.json").exists()

    out = subprocess.run(cmd(broken), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    shards = [snapshot(run / "shards") for run in (broken, tmp_path / "whole")]
    stats = [json.loads((run / "shards" / "reshard_stats.json").read_text()) for run in (broken, tmp_path / "whole")]
    for files, counts in zip(shards, stats):  # the stats name each run's own OUT/subset.npy: compare the rest
        del files["reshard_stats.json"], counts["subset_file"]
    assert shards[0] == shards[1] and stats[0] == stats[1]
    assert (broken / "subset.npy").read_bytes() == (tmp_path / "whole" / "subset.npy").read_bytes()
    assert not [p for p in broken.rglob("*") if is_temporary(p)]
