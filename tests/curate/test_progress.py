"""Progress you can see: a bar in a terminal, plain lines in a log, nothing with --no-progress; never on stdout.

The CLI runs as a child process with its stderr on a pseudo-terminal (python's `pty`) or a pipe, as a user's
terminal or a captured log would have it.
"""

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import progress
from curate.demo.metadata import random_uids
from curate.demo.server import LoopbackImageServer
from tests.curate.helpers import java_available, jpeg_bytes, write_shard_pool
from tests.curate.test_stage_clip import models  # noqa: F401  (a fixture: tiny CLIP models made by the tests)


def run_cli(args, tty: bool) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `curate ARGS`, with stderr on a pseudo-terminal or a pipe."""
    cmd = [sys.executable, "-m", "curate.cli", *args]
    if not tty:
        out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout, out.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a real terminal has a width
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(), stdout, b"".join(chunks).decode(errors="replace")


# ---- the module --------------------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_mode_follows_the_stream_and_the_switch():
    try:
        assert progress.mode(io.StringIO()) == "lines"
        assert progress.mode(FakeTerminal()) == "bar"
        progress.configure(False)
        assert progress.mode(FakeTerminal()) == "off"
    finally:
        progress.configure(True)


def test_a_terminal_sees_each_task_s_counts_at_once():
    """Tasks are shards, minutes apart: the bar is redrawn for each, not only after tqdm's minimum interval."""
    stream = FakeTerminal()
    meter = progress.Meter("work", unit="shards", count=lambda r: {"images": r})
    with progress.Progress(meter, total=3, stream=stream) as bar:
        for _ in range(3):
            bar.task_done(3)
    drawn = stream.getvalue()
    assert "\r" in drawn and ("shards/s" in drawn or "s/shards" in drawn)
    assert all(f"{k}/3 [" in drawn and f"{3 * k} images" in drawn for k in (1, 2, 3)), drawn


def test_plain_lines_are_not_a_flood():
    """Lines mode writes one line per interval at most, and one at the end with the totals and a rate."""
    stream = io.StringIO()
    meter = progress.Meter("work", unit="shards", count=lambda r: {"images": r})
    with progress.Progress(meter, total=1000, stream=stream, interval=3600) as bar:
        for _ in range(1000):
            bar.task_done(7)
    lines = stream.getvalue().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("work: 1,000/1000 shards, ")
    assert "shards/s, 7,000 images, " in lines[0] and "images/s" in lines[0]


def test_plain_lines_come_every_interval():
    stream = io.StringIO()
    with progress.Progress("work", total=3, stream=stream, interval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == \
        ["work: 1/3 tasks", "work: 2/3 tasks", "work: 3/3 tasks", "work: 3/3 tasks"]


def test_off_writes_nothing():
    stream = io.StringIO()
    with progress.Progress(None, total=3, stream=stream) as bar:  # no label: an engine map nobody named
        bar.update(3)
        bar.note("hello")
    try:
        progress.configure(False)
        with progress.Progress("work", total=3, stream=FakeTerminal()) as bar:
            bar.update(3)
            assert bar.mode == "off"
    finally:
        progress.configure(True)
    assert stream.getvalue() == ""


def test_working_beats_until_the_work_ends():
    """Work that counts nothing still shows it is alive: a line every interval, none after it ended."""
    import time

    stream = io.StringIO()
    with progress.working("search", stream=stream, interval=0.01):
        deadline = time.monotonic() + 60
        while "search: working, " not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    after = stream.getvalue()
    assert after.startswith("search: working, ") and after.endswith(" s\n")
    time.sleep(0.05)
    assert stream.getvalue() == after  # the beat stopped with the work


# ---- download through the CLI ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """12 rows on a loopback server: 10 images, 2 dead links (a success rate below 100%)."""
    root = tmp_path_factory.mktemp("web")
    uids = random_uids(np.random.default_rng(3), 12)
    for i, uid in enumerate(uids[:10]):
        (root / f"{uid}.jpg").write_bytes(jpeg_bytes(i, size=(32, 32)))
    with LoopbackImageServer(root) as server:
        table = pa.table({"uid": uids, "url": [server.url(f"{u}.jpg") for u in uids],
                          "text": [f"caption {i}" for i in range(12)]})
        pq.write_table(table, root / "urls.parquet")
        yield root / "urls.parquet"


def _download(url_list, pool, *extra):
    return ["download", "--url-list", str(url_list), "--pool", str(pool), "--shard-size", "4", "--threads", "2",
            "--image-size", "32", "--timeout", "5", "--allow-private", "--processes", "1", *extra]


def test_download_draws_a_bar_in_a_terminal(web, tmp_path):
    rc, stdout, stderr = run_cli(_download(web, tmp_path / "pool"), tty=True)
    assert rc == 0, stderr[-3000:]
    assert "download:" in stderr and ("shards/s" in stderr or "s/shards" in stderr), stderr
    assert "\r" in stderr  # redrawn in place
    assert "images" in stderr and "% success" in stderr, stderr
    assert stdout.startswith("download: 12 rows -> 10 images in 3 shards") and "shards/s" not in stdout


def test_download_writes_plain_lines_to_a_pipe(web, tmp_path):
    rc, stdout, stderr = run_cli(_download(web, tmp_path / "pool"), tty=False)
    assert rc == 0, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("download: ")]
    assert lines and lines[-1].startswith("download: 3/3 shards, "), stderr
    assert " shards/s, 10 images, 83.3% success, " in lines[-1] and "images/s" in lines[-1], stderr
    assert len(lines) <= 2 and "\r" not in stderr  # a short run: its last line, perhaps one 10 s line
    assert "% success" not in stdout


def test_no_progress_writes_nothing_of_progress(web, tmp_path):
    rc, stdout, stderr = run_cli(_download(web, tmp_path / "pool", "--no-progress"), tty=True)
    assert rc == 0, stderr[-3000:]
    assert "shards" not in stderr and "success" not in stderr and "\r" not in stderr, stderr
    assert stdout.startswith("download: 12 rows -> 10 images")


# ---- stage and reshard through the CLI -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    meta = write_shard_pool(root, [5, 4, 3], seed=4, failed_per_shard=0)
    return root, meta


def test_stage_shows_images_per_second(shard_pool, tmp_path):
    """A bar in a terminal, a last line with images and images/s to a pipe, nothing with --no-progress."""
    import shutil

    for how in ("tty", "pipe", "off"):
        pool = tmp_path / how
        shutil.copytree(shard_pool[0], pool)
        args = ["stage", "--pool", str(pool), "--signals", "phash", "--processes", "1"]
        rc, stdout, stderr = run_cli(args + (["--no-progress"] if how == "off" else []), tty=how != "pipe")
        assert rc == 0, stderr[-3000:]
        assert stdout.startswith("stage: 12 samples in 3 shards")
        if how == "tty":
            assert "stage phash:" in stderr and "shards" in stderr and "\r" in stderr, stderr
        elif how == "pipe":
            assert [line for line in stderr.splitlines() if line.startswith("stage phash: ")][-1].startswith(
                "stage phash: 3/3 shards, "), stderr
            assert ", 12 images, " in stderr and "images/s" in stderr, stderr
        else:
            assert "stage phash" not in stderr and "\r" not in stderr, stderr


def test_reshard_counts_samples_written(shard_pool, tmp_path):
    from curate.subset import sort_pairs, write_subset
    from curate.uids import uids_to_pairs

    root, meta = shard_pool
    write_subset(tmp_path / "s.npy", sort_pairs(uids_to_pairs(meta.column("uid").to_pylist()[:7])))
    args = ["reshard", "--pool", str(root), "--subset", str(tmp_path / "s.npy"), "--shard-size", "3", "--processes", "1"]
    rc, stdout, stderr = run_cli(args + ["--output", str(tmp_path / "out")], tty=False)
    assert rc == 0, stderr[-3000:]
    assert "reshard: write: 3/3 shards, " in stderr and "7 samples written" in stderr, stderr
    assert "samples written" not in stdout
    rc, stdout, stderr = run_cli(args + ["--output", str(tmp_path / "quiet"), "--no-progress"], tty=False)
    assert rc == 0 and "reshard: write" not in stderr and "reshard: select" not in stderr, stderr


def test_dedup_shows_it_is_working(shard_pool, tmp_path):
    import shutil

    pool = tmp_path / "pool"
    shutil.copytree(shard_pool[0], pool)
    assert run_cli(["stage", "--pool", str(pool), "--signals", "phash", "--processes", "1", "--no-progress"], tty=False)[0] == 0
    rc, stdout, stderr = run_cli(["dedup", "--pool", str(pool)], tty=True)
    assert rc == 0 and "dedup phash: working, 00:0" in stderr and "phash: working" not in stdout, stderr
    rc, stdout, stderr = run_cli(["dedup", "--pool", str(pool), "--no-progress"], tty=True)
    assert rc == 0 and "phash: working" not in stderr and "\r" not in stderr, stderr


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_cluster_engines_count_each_shard_once(shard_pool, tmp_path, engine):
    """Dask reports shards as they finish; Spark's finished tasks are counted while collect() waits and their
    images when the results come back: either way each shard and image is counted once."""
    import shutil

    if engine == "spark" and not java_available():
        pytest.skip("Spark needs Java")
    pool = tmp_path / "pool"
    shutil.copytree(shard_pool[0], pool)
    rc, stdout, stderr = run_cli(["stage", "--pool", str(pool), "--signals", "phash", "--engine", engine,
                                  "--processes", "2"], tty=False)
    assert rc == 0, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("stage phash: ")]
    assert lines and lines[-1].startswith("stage phash: 3/3 shards, ") and ", 12 images, " in lines[-1], stderr
    assert stdout.startswith("stage: 12 samples in 3 shards")


def test_stage_loader_path_counts_images(tmp_path, models, capsys):
    """The loader path (the GPU default; here on CPU) counts images per batch and shards as they are written."""
    from curate.engines import LocalEngine
    from curate.pool import Pool
    from curate.stage import StageOptions, run_stage

    write_shard_pool(tmp_path / "pool", [5, 4], seed=5, failed_per_shard=0)
    with LocalEngine(1) as engine:
        stats = run_stage(Pool(tmp_path / "pool"), ["phash", "clip"], engine,
                          options=StageOptions(models=(models["a"],), batch_size=4, device="cpu", torch_threads=1,
                                               loader_workers=1))
    out = capsys.readouterr()
    assert stats["engine"] == "loader" and out.out == ""
    assert out.err.splitlines()[-1].startswith(f"stage phash,{models['a'].folder}: 9/9 images, "), out.err
    assert " images/s, 2/2 shards, " in out.err, out.err
