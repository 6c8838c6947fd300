"""Every long command killed with SIGKILL at random moments (several seeds), then rerun: what it leaves is what
an unbroken run leaves, file for file (issue 16: the fault-injection suite)."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.demo.metadata import random_uids
from tests.curate.helpers import jpeg_bytes
from tests.faults.hostile_server import HostileServer
from tests.faults.killing import kill_after, run, snapshot

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def slow_web(tmp_path_factory):
    """120 rows: mostly images served after 50 ms each, some dead links, corrupt files and refused schemes."""
    root = tmp_path_factory.mktemp("kill_web")
    web = root / "web"
    web.mkdir()
    uids = random_uids(np.random.default_rng(11), 120)
    with HostileServer(web, root / "requests.log") as server:
        urls = []
        for i, uid in enumerate(uids):
            kind = i % 10
            if kind == 7:
                urls.append(f"{server.base}/slow/missing-{i}.jpg")
            elif kind == 8:
                (web / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg" * 5)
                urls.append(f"{server.base}/slow/{i}.jpg")
            elif kind == 9:
                urls.append(f"ftp://127.0.0.1/{i}.jpg")
            else:
                (web / f"{i}.jpg").write_bytes(jpeg_bytes(i, (48 + i % 17, 40)))
                urls.append(f"{server.base}/slow/{i}.jpg")
        pq.write_table(pa.table({"uid": uids, "url": urls, "text": [f"caption {i}" for i in range(120)]}),
                       root / "urls.parquet")
        yield root
    

def download_cmd(root, pool):
    return [sys.executable, "-m", "curate.cli", "download", "--url-list", str(root / "urls.parquet"), "--pool", str(pool),
            "--shard-size", "10", "--threads", "2", "--processes", "2", "--image-size", "32", "--allow-private"]


def test_download_killed_anywhere_resumes_to_the_same_pool(slow_web, tmp_path):
    wall = run(download_cmd(slow_web, tmp_path / "unbroken"))
    want = snapshot(tmp_path / "unbroken")
    assert any(k.endswith(".tar") for k in want)
    killed_mid_run = 0
    for seed in SEEDS:
        pool = tmp_path / f"killed{seed}"
        when = np.random.default_rng(seed).uniform(0.2, 0.95) * wall
        killed_mid_run += kill_after(download_cmd(slow_web, pool), when)
        run(download_cmd(slow_web, pool))
        got = snapshot(pool)
        assert sorted(got) == sorted(want), f"seed {seed}: killed at {when:.1f} s of {wall:.1f} s"
        for name in want:
            assert got[name] == want[name], f"seed {seed}: {name} differs (killed at {when:.1f} s of {wall:.1f} s)"
    assert killed_mid_run, "no kill landed while the download ran"
