"""`curate download` against a hostile web on loopback: bombs, endless and dripping bodies, redirects inside.

The server runs as its own process (tests/faults/hostile_server.py) and logs every request, so "nothing was
requested" is checked on the server's side; the downloader runs as the real CLI, whose whole process tree
is measured for memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.demo.metadata import random_uids
from tests.curate.helpers import jpeg_bytes
from tests.faults.hostile_server import HostileServer
import numpy as np

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    srv = HostileServer(web, tmp_path / "requests.log")
    yield srv
    srv.close()


def _tree_pss(proc: psutil.Process) -> int:
    """The memory a process tree holds: the sum of each process's proportional set size (PSS).

    PSS, not RSS: every download worker maps the same torch and OpenCV libraries (img2dataset imports them),
    and RSS would count those shared pages once per process."""
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str], timeout: float = 300) -> tuple[subprocess.CompletedProcess, int, float]:
    """Run cmd; return its result, the peak memory of its process tree (bytes, polled) and its wall time."""
    start = time.monotonic()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    out = err = ""
    while True:
        try:
            peak = max(peak, _tree_pss(proc))
        except psutil.Error:
            pass
        try:
            out, err = proc.communicate(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - start > timeout:
                proc.kill()
                raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak, time.monotonic() - start


def hostile_list(server: HostileServer, tmp_path: Path, good: int = 20) -> tuple[Path, list[str]]:
    uids = random_uids(np.random.default_rng(7), good + 5)
    urls = []
    for i in range(good):
        (server.root / f"{i}.jpg").write_bytes(jpeg_bytes(i, (40, 30)))
        urls.append(f"{server.base}/img/{i}.jpg")
    urls += [f"{server.base}/bomb.png", f"{server.base}/endless", f"{server.base}/drip",
             f"{server.base}/redirect/169.254.169.254/latest/meta-data/", f"{server.base}/huge"]
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"uid": uids, "url": urls, "text": [f"a caption {i}" for i in range(len(urls))]}), path)
    return path, uids


def download_cmd(url_list: Path, pool: Path, *extra: str) -> list[str]:
    """A 10 s read timeout lets good loopback images through on a loaded machine; the 15 s deadline still
    bounds the dripping body."""
    return [sys.executable, "-m", "curate.cli", "download", "--url-list", str(url_list), "--pool", str(pool),
            "--image-size", "32", "--shard-size", "10", "--threads", "8", "--processes", "2",
            "--timeout", "10", "--deadline", "15", *extra]


def test_nothing_private_is_requested_by_default(server, tmp_path):
    url_list, _ = hostile_list(server, tmp_path)
    out = subprocess.run(download_cmd(url_list, tmp_path / "pool"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert server.requested() == []  # every URL is on loopback: refused before a connection is made
    s = json.loads((tmp_path / "pool" / "download_stats.json").read_text())
    assert s["refused"] == {"private_address": 25} and s["success"] == 0 and s["reconciled"]


def test_hostile_web_is_counted_by_reason_within_time_and_memory(server, tmp_path):
    url_list, uids = hostile_list(server, tmp_path)
    out, peak, wall = run_measured(download_cmd(url_list, tmp_path / "pool", "--allow-private"))
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads((tmp_path / "pool" / "download_stats.json").read_text())
    assert s["success"] == 20 and s["reconciled"], s
    reasons = s["failure_reasons"]
    assert reasons.get("too_many_pixels") == 1, reasons  # the bomb, refused on its header
    assert reasons.get("too_large") == 2, reasons  # the endless body and the declared 10 GB
    assert reasons.get("deadline") == 1, reasons  # the drip: 1 byte a second for 1000 s
    # the metadata redirect was followed (--allow-private) and failed somehow; it is counted, not fetched
    assert sum(reasons.values()) == 5
    assert wall < 60, f"took {wall:.1f} s"
    assert peak < 1.5 * 2**30, f"peak memory (PSS) of the process tree {peak / 2**20:.0f} MB"
    print(f"hostile download: {wall:.1f} s, peak tree PSS {peak / 2**20:.0f} MB")


def test_each_redirect_hop_is_checked(server, tmp_path):
    """Only 127.0.0.1 is allowed: a redirect from it to cloud metadata or to another loopback spelling is refused."""
    good = random_uids(np.random.default_rng(3), 3)
    (server.root / "ok.jpg").write_bytes(jpeg_bytes(1))
    urls = [f"{server.base}/img/ok.jpg",
            f"{server.base}/redirect/169.254.169.254/latest/meta-data/",
            f"{server.base}/redirect/0x7f000002:{server.port}/img/ok.jpg"]  # 127.0.0.2, written in hex
    pq.write_table(pa.table({"uid": good, "url": urls, "text": ["a b c"] * 3}), tmp_path / "l.parquet")
    out = subprocess.run(download_cmd(tmp_path / "l.parquet", tmp_path / "pool", "--allow-network", "127.0.0.1/32"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads((tmp_path / "pool" / "download_stats.json").read_text())
    assert s["success"] == 1 and s["refused"] == {"private_address": 2} and s["reconciled"], s
    assert sorted(server.requested()) == sorted(urls_path for urls_path in
                                                ["/img/ok.jpg", "/redirect/169.254.169.254/latest/meta-data/",
                                                 f"/redirect/0x7f000002:{server.port}/img/ok.jpg"])
