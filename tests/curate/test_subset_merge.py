"""The streaming subset merge (curate.subset.merge_sorted_runs) and its spilled runs (curate.spill): the bytes of
np.unique's answer, memory set by the buffers rather than by the rows kept, and no spill folder or partial
subset.npy left by a run that fails or is killed."""

from __future__ import annotations

import hashlib
import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import cli
from curate.demo.metadata import generate_metadata
from curate.run import distinct_pairs
from curate.spill import LOCK, SpillGone, fewer_runs, file_runs, remove_stale_spills, spill_folder, write_run
from curate.subset import ArrayRun, merge_sorted_runs, read_subset, sort_pairs, write_subset, write_subset_runs
from curate.uids import UID_DTYPE
from tests.curate.helpers import write_metadata_pool
from tests.faults.killing import kill_after, run

CURATE = [sys.executable, "-m", "curate.cli"]


def _pairs(rng, n: int, hi: int | None, lo: int) -> np.ndarray:
    """n random uid pairs; few distinct upper words (hi) and lower words (lo) make ties and repeats."""
    p = np.empty(n, dtype=UID_DTYPE)
    p["f0"] = rng.integers(0, 2**64 - 1 if hi is None else hi, n, dtype=np.uint64, endpoint=True)
    p["f1"] = rng.integers(0, lo, n, dtype=np.uint64, endpoint=True)
    return p


def _random_runs(rng, hi) -> list[np.ndarray]:
    runs = [sort_pairs(_pairs(rng, int(rng.integers(0, 700)), hi, [3, 2**64 - 1][int(rng.integers(0, 2))]))
            for _ in range(int(rng.integers(0, 9)))]
    if len(runs) > 2 and len(runs[0]):
        runs[2] = sort_pairs(np.concatenate([runs[2], runs[0][::7], runs[0][:1]]))  # uids kept in two files
    runs.insert(int(rng.integers(0, len(runs) + 1)), np.zeros(0, UID_DTYPE))  # a partition that kept nothing
    return runs


def test_merge_equals_unique_of_the_concatenation(tmp_path):
    """Random runs (repeats within a run and across runs, ties in the upper word, empty runs), read a few rows at a
    time from memory and from spilled files (every other trial merged in groups first, as for many runs): the
    batches are np.unique of the concatenation."""
    rng = np.random.default_rng(17)
    for trial in range(60):
        runs = _random_runs(rng, [None, 40, 2][trial % 3])
        want = np.unique(np.concatenate(runs))
        chunk = int(rng.integers(1, 40))
        got = list(merge_sorted_runs([ArrayRun(r) for r in runs], chunk))
        assert all(len(b) for b in got)
        assert np.concatenate(got or [np.zeros(0, UID_DTYPE)]).tobytes() == want.tobytes(), trial
        with spill_folder(tmp_path / f"out{trial}") as folder:
            spilled = file_runs([write_run(folder, i, r) for i, r in enumerate(runs)])
            if trial % 2:  # more runs than one merge takes: groups are merged into runs of their own first
                spilled = fewer_runs(spilled, folder, fan_in=int(rng.integers(2, 4)))
                assert len(spilled) <= 3
            path, rows, sha = write_subset_runs(tmp_path / "got.npy", spilled, buffer_bytes=int(rng.integers(1, 64)) << 10)
        assert path.read_bytes() == write_subset(tmp_path / "want.npy", want).read_bytes(), trial
        assert rows == len(want) and sha == hashlib.sha256(path.read_bytes()).hexdigest()
        assert not os.listdir(tmp_path / f"out{trial}")  # the spill folder went with its block


def test_merge_memory_is_bounded_by_its_buffers(tmp_path):
    """8M kept uids (128 MB) in 16 spilled runs merge with a 2 MB buffer: the merge's peak allocation (~9 MB) stays a
    small fraction of the rows' size (it held every run at once before)."""
    rng = np.random.default_rng(3)
    runs = [sort_pairs(_pairs(rng, 500_000, None, 2**64 - 1)) for _ in range(16)]
    runs[5] = sort_pairs(np.concatenate([runs[5][:-20_000], runs[4][:20_000]]))  # 20,000 uids in two runs
    want = distinct_pairs(np.concatenate(runs))
    kept_bytes = sum(r.nbytes for r in runs)
    with spill_folder(tmp_path / "out") as folder:
        spilled = file_runs([write_run(folder, i, r) for i, r in enumerate(runs)])
        del runs
        tracemalloc.start()
        try:
            path, rows, _ = write_subset_runs(tmp_path / "subset.npy", spilled, buffer_bytes=2 << 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert rows == len(want) == 8_000_000 - 20_000
    assert np.array_equal(read_subset(path), want)
    assert peak < kept_bytes / 8, f"merge peak {peak / 2**20:.1f} MiB for {kept_bytes / 2**20:.0f} MiB of runs"


def test_stale_spill_folders_go_and_live_ones_stay(tmp_path):
    """A folder whose driver holds its lock is another run's, alive; one whose lock is free was left by a killed
    run and is removed by the next."""
    out = tmp_path / "out"
    with spill_folder(out) as live:
        dead = out / ".subset-runs.0badf00d.tmp"
        dead.mkdir()
        (dead / LOCK).touch()
        (dead / "000000.npy").write_bytes(b"left by a killed run")
        assert remove_stale_spills(out) == [str(dead)]
        assert Path(live).is_dir() and not dead.exists()
    assert not out.exists() or not os.listdir(out)


def test_a_task_writing_after_its_run_ended_leaves_nothing(tmp_path):
    """A task still running after another failed writes its run late: into a folder already removed it fails
    and makes no folder; into one whose removal has begun (the marker gone first, the rest not yet) it takes
    its own run back, so the driver's rmtree finds nothing new."""
    rng = np.random.default_rng(4)
    pairs = sort_pairs(_pairs(rng, 50, None, 2**64 - 1))
    out = tmp_path / "out"
    with spill_folder(out) as folder:
        assert write_run(folder, 0, pairs)["rows"] == 50  # while the run lives
        (Path(folder) / LOCK).unlink()  # the driver's removal has begun
        with pytest.raises(SpillGone):
            write_run(folder, 1, pairs)
        assert sorted(p.name for p in Path(folder).iterdir()) == ["000000.npy"]
    with pytest.raises(FileNotFoundError):
        write_run(folder, 2, pairs)
    assert not Path(folder).exists()


def _pool(root: Path, parts: int, rows: int) -> None:
    write_metadata_pool(root, [rows] * parts, seed=5)


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def test_a_failing_partition_leaves_no_spill_folder_and_no_subset(tmp_path, capsys):
    """One partition's caption is not UTF-8: its task fails after others have spilled their runs; the run stops
    with one line, and the output holds no spill folder and no subset.npy."""
    _pool(tmp_path / "pool", 6, 400)
    bad = tmp_path / "pool" / "metadata" / "00000004.parquet"
    t = generate_metadata(400, seed=9)
    raw = [(s or "").encode() for s in t.column("text").to_pylist()]
    raw[7] = b"caf\xe9 \xff"
    binary = pa.array(raw, pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())
    pq.write_table(t.set_column(t.column_names.index("text"), "text", text), bad)
    out = tmp_path / "out"
    assert cli.main(["run", "--pool", str(tmp_path / "pool"), "--filter", "basic", "--output", str(out),
                     "--processes", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err, err
    assert not (out / "subset.npy").exists() and _leftovers(out) == []


def test_killed_run_leaves_no_partial_subset_and_the_rerun_clears_its_spills(tmp_path):
    """SIGKILL while partitions spill their runs: no subset.npy (nor a temporary of one), the dead run's spill
    folder stays; the rerun removes it and writes the unbroken run's bytes."""
    _pool(tmp_path / "pool", 40, 3000)
    cmd = lambda out: [*CURATE, "run", "--pool", str(tmp_path / "pool"), "--filter", "clip_score", "--fraction", "0.3",
                       "--arch", "b32", "--output", str(out), "--processes", "1", "--no-report", "--no-progress"]
    run(cmd(tmp_path / "unbroken"))
    out = tmp_path / "out"
    spilled = lambda: any(out.glob(".subset-runs.*.tmp/*.npy"))
    assert kill_after(cmd(out), 0, ready=spilled, timeout=300)
    left = _leftovers(out)
    assert not (out / "subset.npy").exists() and len(left) == 1 and left[0].startswith(".subset-runs."), left
    run(cmd(out))
    assert _leftovers(out) == []
    assert (out / "subset.npy").read_bytes() == (tmp_path / "unbroken" / "subset.npy").read_bytes()


def test_a_damaged_spilled_run_is_one_clear_error(tmp_path):
    """A run cut short (disk full, a stray writer) or holding another row count than its task reported is
    refused by name, never merged as a shorter subset."""
    from curate.spill import FileRun
    from curate.subset import SubsetFileError

    rng = np.random.default_rng(3)
    with spill_folder(tmp_path / "out") as folder:
        info = write_run(folder, 0, sort_pairs(_pairs(rng, 5000, None, 2**64 - 1)))
        assert info["rows"] == 5000
        with pytest.raises(SubsetFileError, match="header says"):
            FileRun(info["path"], 4999).read(0, 10)
        size = os.path.getsize(info["path"])
        os.truncate(info["path"], size - 16 * 100)
        with pytest.raises(SubsetFileError, match="truncated"):
            list(merge_sorted_runs([FileRun(info["path"], 5000)], chunk=1024))
