"""The same pipeline on every engine gives the same bytes: local processes, a real Dask cluster, a real Spark session."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.demo.server import LoopbackImageServer
from curate.download import DownloadOptions, download
from curate.engines import LocalEngine, make_engine
from curate.pool import Pool
from curate.reshard import reshard
from curate.run import run_filters
from filters.registry import build_filter
from tests.curate.helpers import java_available, tar_samples, write_shard_pool
from tests.curate.test_download import make_web, url_table

FILTERS = dict(arch="b32", fraction=0.5)


def pipeline(pool_root, out, engine):
    stats = run_filters(Pool(pool_root), [build_filter("no_filter"), build_filter("clip_score", **FILTERS)], out, engine)
    rs = reshard(Pool(pool_root), out / "subset.npy", out / "shards", engine, shard_size=7, overwrite=True)
    return stats, rs


def outputs(out):
    files = {"subset.npy": (out / "subset.npy").read_bytes()}
    for p in sorted((out / "shards").iterdir()):
        if p.name != "reshard_stats.json":
            files[f"shards/{p.name}"] = p.read_bytes()
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    write_shard_pool(root / "pool", [12, 9, 15, 4], seed=11, failed_per_shard=1)
    with LocalEngine(2) as engine:
        stats, rs = pipeline(root / "pool", root / "local", engine)
    assert rs["reconciled"] and rs["written"] > 0
    uids, kinds = make_web(root / "web", 33, seed=2)
    return root, stats, rs, uids, kinds


def downloaded_uids(pool):
    per_shard = {}
    for tar in sorted((pool / "shards").glob("*.tar")):
        per_shard[tar.name] = sorted(json.loads(f["json"])["uid"] for _, f in tar_samples(tar))
    return per_shard


def check_engine(world, engine, tmp_path):
    root, stats, rs, uids, kinds = world
    got_stats, got_rs = pipeline(root / "pool", tmp_path / "out", engine)
    assert outputs(tmp_path / "out") == outputs(root / "local")
    assert {k: v for k, v in got_stats.items() if k not in ("engine", "seconds", "subset_file")} == \
        {k: v for k, v in stats.items() if k not in ("engine", "seconds", "subset_file")}
    assert {k: v for k, v in got_rs.items() if k != "subset_file"} == {k: v for k, v in rs.items() if k != "subset_file"}
    # img2dataset's downloader, mapped by this engine, fills the same shards with the same samples
    with LoopbackImageServer(root / "web") as server:
        pq.write_table(url_table(server, uids, kinds), tmp_path / "list.parquet")
        opts = DownloadOptions(image_size=32, shard_size=8, threads=2, allow_private=True)
        s = download(str(tmp_path / "list.parquet"), tmp_path / "dl", engine, opts)
        with LocalEngine(1) as local:
            ref = download(str(tmp_path / "list.parquet"), tmp_path / "dl_local", local, opts)
    assert s["reconciled"] and {k: v for k, v in s.items()} == ref
    assert downloaded_uids(tmp_path / "dl") == downloaded_uids(tmp_path / "dl_local")


def test_dask_local_cluster(world, tmp_path):
    with make_engine("dask", processes=2) as engine:
        check_engine(world, engine, tmp_path)


def test_spark_session(world, tmp_path):
    if not java_available():
        pytest.skip("Java 17+ is needed for Spark (scripts/ensure-java.sh installs it)")
    with make_engine("spark", processes=2) as engine:
        check_engine(world, engine, tmp_path)


def test_cli_on_a_running_dask_scheduler(world, tmp_path):
    """A scheduler and two worker processes started apart from curate, reached by address, as on a real cluster."""
    from distributed import LocalCluster

    root = world[0]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = subprocess.run(
            [sys.executable, "-m", "curate.cli", "run", "--pool", str(root / "pool"), "--filter", "no_filter",
             "--filter", "clip_score", "--arch", "b32", "--fraction", "0.5", "--output", str(tmp_path / "out"),
             "--shard-size", "7", "--engine", "dask", "--dask-scheduler", cluster.scheduler_address],
            capture_output=True, text=True, timeout=300,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "reconcile: True" in out.stdout
    assert outputs(tmp_path / "out") == outputs(root / "local")
