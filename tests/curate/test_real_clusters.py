"""Clusters as users run them: `dask scheduler` / `dask worker` and a Spark standalone master and worker,
each a separate process started in a folder of its own, with `curate` run on RELATIVE paths from the folder
that holds the pool. The outputs must be the local engine's, byte for byte; a wrong address, a master
without a worker, and a worker that cannot see the pool must each be one line, in seconds.

A worker "that cannot see the pool" is made honestly, as on a machine without the shared filesystem: it is
started in a private mount namespace (`unshare -m`) with an empty tmpfs mounted over the folder that holds
the pool, so the driver sees the pool there and the worker sees an empty folder. Where mount namespaces are
not allowed (no root and no user namespaces), those tests are skipped.

Select them with `-m clusters`; they start JVMs and take minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.curate.helpers import java_available, write_shard_pool

pytestmark = [pytest.mark.clusters, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
SPARK_HOME = None
try:
    import pyspark

    SPARK_HOME = Path(pyspark.__file__).parent
except ImportError:  # pragma: no cover - pyspark is a dependency
    pass

# The commands of the pipeline, on relative paths (cwd = the folder holding `pool`).
PIPELINE = [
    ["stage", "--pool", "pool", "--signals", "phash,sha256"],
    ["dedup", "--pool", "pool", "--method", "phash", "--max-distance", "22"],
    ["run", "--pool", "pool", "--filter", "basic", "--filter", "dedup", "--output", "out", "--no-reshard", "--no-report"],
    ["reshard", "--pool", "pool", "--subset", "out/subset.npy", "--output", "shards", "--shard-size", "7"],
]
# Stats keys that say how an engine worked rather than what it found (timings, its name, its search plan and counts).
ENGINE_KEYS = {"seconds", "images_per_second", "engine", "device", "plan", "candidates", "probes", "component_rounds",
               "block_search", "partitions", "label_join"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"port {port} not open after {timeout} s: {log.read_text()[-2000:]}")


class Processes:
    """Processes started by a test, each in its own session so teardown ends it and its children."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: list[subprocess.Popen] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.logs / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc, log

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def start_dask_scheduler(procs: Processes, cwd: Path) -> str:
    """`dask scheduler` on a free loopback port; returns its address once it listens."""
    port = free_port()
    sched, log = procs.start("scheduler", [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                           "--no-dashboard"], cwd=cwd)
    wait_for_port(port, sched, log)
    return f"tcp://127.0.0.1:{port}"


def blinding_prefix(hidden: Path) -> list[str] | None:
    """A command prefix that runs its command with an empty tmpfs over `hidden` (None where not allowed)."""
    for unshare in (["unshare", "-m", "--propagation", "private"], ["unshare", "-U", "-r", "-m", "--propagation", "private"]):
        if shutil.which("unshare") and subprocess.run(unshare + ["true"], capture_output=True).returncode == 0:
            return unshare + ["sh", "-c", f'mount -t tmpfs tmpfs "{hidden}" && exec "$@"', "blind"]
    return None


def spark_env() -> dict:
    return {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
            "CURATE_SPARK_DRIVER_MEMORY": "1g"}


def curate(args: list[str], cwd: Path, engine: list[str], env: dict | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args, *engine, "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_pipeline(folder: Path, engine: list[str], env: dict | None = None) -> dict[str, object]:
    """The pipeline's commands in `folder` (which holds `pool`); returns what they wrote, by path, to compare
    across engines: every data file's bytes, and each JSON stats file without its ENGINE_KEYS, with the
    folder's own path written as `<folder>` (out/timings.json, only timings, is left out)."""
    for args in PIPELINE:
        out = curate(args, folder, engine, env)
        assert out.returncode == 0, f"curate {' '.join(args + engine)}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"

    def scrub(value):
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k not in ENGINE_KEYS}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value.replace(str(folder), "<folder>") if isinstance(value, str) else value

    files = {}
    for sub in ("pool/columns", "out", "shards"):
        for p in sorted((folder / sub).rglob("*")):
            name = str(p.relative_to(folder))
            if p.is_file() and name != "out/timings.json":
                files[name] = scrub(json.loads(p.read_bytes())) if p.suffix == ".json" else p.read_bytes()
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small pool (4 shards; pHashes within 22 bits of each other) and the local engine's outputs for the pipeline."""
    root = tmp_path_factory.mktemp("clusters")
    write_shard_pool(root / "base" / "pool", [12, 9, 15, 4], seed=11, failed_per_shard=1)
    local = root / "local"
    shutil.copytree(root / "base", local)
    files = run_pipeline(local, ["--engine", "local", "--processes", "2"])
    assert any(name.startswith("shards/") and name.endswith(".tar") for name in files)
    assert any("dedup_phash" in name for name in files)
    assert json.loads((local / "pool/columns/dedup_phash_stats.json").read_text())["groups_with_duplicates"] > 0
    return root, files


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and `dask worker` as separate processes, the worker started in another folder."""
    root = tmp_path_factory.mktemp("dask")
    procs = Processes(root / "logs")
    (root / "scheduler").mkdir()
    (root / "worker").mkdir()
    try:
        address = start_dask_scheduler(procs, root / "scheduler")
        procs.start("worker", [str(VENV_BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                               "--no-dashboard", "--host", "127.0.0.1"], cwd=root / "worker")
        yield address, root, procs
    finally:
        procs.stop_all()


class SparkStandalone:
    """A Spark standalone master (and workers) from the pyspark wheel: `spark-class ...Master` / `...Worker`."""

    def __init__(self, root: Path, procs: Processes):
        self.root, self.procs = root, procs
        self.port, self.ui = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        master, log = procs.start("master", [str(SPARK_HOME / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                                             "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui)],
                                  cwd=root, env=spark_env())
        wait_for_port(self.port, master, log)
        wait_for_port(self.ui, master, log)  # its JSON status says which workers registered
        deadline = time.monotonic() + 120
        while True:  # Jetty opens the port before it mounts the status page: a 404 at first, under load
            try:
                self.alive_workers()
                break
            except (urllib.error.URLError, OSError, ValueError):
                if master.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"spark master's status page did not answer: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)

    def add_worker(self, name: str, prefix: list[str] | None = None) -> subprocess.Popen:
        work = self.root / f"{name}-work"
        work.mkdir(exist_ok=True)
        before = self.alive_workers()
        proc, log = self.procs.start(name, (prefix or []) + [
            str(SPARK_HOME / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
            "--cores", "2", "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(work)],
            cwd=work, env=spark_env())
        deadline = time.monotonic() + 120
        while self.alive_workers() <= before:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"spark worker {name} did not register: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        return proc

    def alive_workers(self) -> int:
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(f"http://127.0.0.1:{self.ui}/json/", timeout=5) as r:
            return int(json.load(r).get("aliveworkers", 0))


def needs_spark():
    if SPARK_HOME is None or not java_available():
        pytest.skip("Java 17+ and pyspark are needed for a Spark standalone cluster")


@contextlib.contextmanager
def spark_standalone(root: Path, workers: tuple[str, ...]):
    """A master with the named workers, all stopped on exit."""
    needs_spark()
    procs = Processes(root / "logs")
    try:
        cluster = SparkStandalone(root, procs)
        for name in workers:
            cluster.add_worker(name)
        yield cluster
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    with spark_standalone(tmp_path_factory.mktemp("spark"), ("worker",)) as cluster:
        yield cluster


def fresh_copy(world, name: str) -> Path:
    root, _ = world
    folder = root / name
    shutil.copytree(root / "base", folder)
    return folder


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The command's only stderr line (a JVM's own start-up warning aside); fails on a traceback or more lines."""
    lines = [line for line in out.stderr.splitlines()
             if line.strip() and not line.startswith("WARNING: Using incubator modules")]
    assert out.returncode != 0 and len(lines) == 1, f"rc {out.returncode}, stderr:\n{out.stderr[-3000:]}"
    return lines[0]


def test_dask_cluster_on_relative_paths_writes_the_local_bytes(world, dask_cluster):
    address, _, _ = dask_cluster
    folder = fresh_copy(world, "dask")
    assert run_pipeline(folder, ["--engine", "dask", "--dask-scheduler", address]) == world[1]


def test_spark_standalone_on_relative_paths_writes_the_local_bytes(world, spark_cluster):
    folder = fresh_copy(world, "spark")
    files = run_pipeline(folder, ["--engine", "spark", "--spark-master", spark_cluster.url], env=spark_env())
    assert files == world[1]
    assert not list((spark_cluster.root / "worker-work").rglob("pool")), "an executor wrote a pool in its own folder"


def test_a_dead_dask_scheduler_address_is_one_line(world):
    folder = fresh_copy(world, "dask-dead")
    port = free_port()  # nothing listens there
    start = time.monotonic()
    out = curate(PIPELINE[0], folder, ["--engine", "dask", "--dask-scheduler", f"tcp://127.0.0.1:{port}"], timeout=60)
    took = time.monotonic() - start
    line = one_line_error(out)
    assert line.startswith(f"curate stage: error: cannot reach Dask scheduler tcp://127.0.0.1:{port}: "), line
    assert "refused" in line, line
    assert took < 30, f"took {took:.1f} s"  # a hang guard, not a timing test
    assert not (folder / "pool" / "columns").exists()


def test_a_port_that_accepts_but_never_answers_is_one_line(world):
    """Distributed's own client waits for the handshake without bound: the check asks with one."""
    folder = fresh_copy(world, "dask-silent")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        start = time.monotonic()
        out = curate(PIPELINE[0], folder, ["--engine", "dask", "--dask-scheduler", f"tcp://127.0.0.1:{port}"], timeout=60)
        took = time.monotonic() - start
    line = one_line_error(out)
    assert f"cannot reach Dask scheduler tcp://127.0.0.1:{port}: it accepts connections but does not answer" in line, line
    assert took < 30, f"took {took:.1f} s"


def test_a_dask_scheduler_without_workers_is_one_line(world, tmp_path):
    procs = Processes(tmp_path / "logs")
    try:
        address = start_dask_scheduler(procs, tmp_path)
        out = curate(PIPELINE[0], fresh_copy(world, "dask-empty"),
                     ["--engine", "dask", "--dask-scheduler", address, "--cluster-wait", "2"], timeout=60)
    finally:
        procs.stop_all()
    line = one_line_error(out)
    assert f"Dask scheduler {address} has no worker after 2 s" in line, line


@pytest.fixture
def hidden_pool(world, tmp_path):
    """A copy of the pool in a folder that workers started with the returned prefix see empty."""
    hidden = tmp_path / "shared"
    prefix = blinding_prefix(hidden)
    if prefix is None:
        pytest.skip("mount namespaces are not allowed here (unshare -m)")
    hidden.mkdir()
    shutil.copytree(world[0] / "base" / "pool", hidden / "pool")
    return hidden, prefix


def test_a_dask_worker_that_cannot_see_the_pool_is_named(hidden_pool, tmp_path):
    hidden, prefix = hidden_pool
    procs = Processes(tmp_path / "logs")
    try:
        address = start_dask_scheduler(procs, tmp_path)
        procs.start("blind-worker", prefix + [str(VENV_BIN / "dask"), "worker", address, "--nthreads", "1",
                                              "--no-dashboard", "--host", "127.0.0.1"], cwd=tmp_path)
        out = curate(PIPELINE[0], hidden, ["--engine", "dask", "--dask-scheduler", address], timeout=120)
    finally:
        procs.stop_all()
    line = one_line_error(out)
    assert line.startswith("curate stage: error: Dask worker tcp://127.0.0.1:"), line
    assert f"cannot see --pool {hidden / 'pool'} (No such file or directory)" in line, line
    assert "same absolute paths" in line, line
    assert not (hidden / "pool" / "columns").exists()


def test_a_dead_spark_master_address_is_one_line(world):
    needs_spark()
    port = free_port()
    out = curate(PIPELINE[0], fresh_copy(world, "spark-dead"), ["--engine", "spark", "--spark-master", f"spark://127.0.0.1:{port}"],
                 env=spark_env(), timeout=60)
    line = one_line_error(out)
    assert line.startswith(f"curate stage: error: cannot reach Spark master spark://127.0.0.1:{port}: "), line
    assert "refused" in line, line


@pytest.fixture(scope="module")
def lone_spark_master(tmp_path_factory):
    """A master that starts with no worker (the blind-worker test then gives it one)."""
    with spark_standalone(tmp_path_factory.mktemp("spark-lone"), ()) as cluster:
        yield cluster


def test_a_spark_master_without_workers_is_one_line(world, lone_spark_master):
    assert lone_spark_master.alive_workers() == 0
    out = curate(PIPELINE[0], fresh_copy(world, "spark-empty"),
                 ["--engine", "spark", "--spark-master", lone_spark_master.url, "--cluster-wait", "3"], env=spark_env(), timeout=180)
    line = one_line_error(out)
    assert f"Spark master {lone_spark_master.url} gave no executor in 3 s" in line, line


def test_a_spark_worker_that_cannot_see_the_pool_is_named(hidden_pool, lone_spark_master):
    hidden, prefix = hidden_pool
    lone_spark_master.add_worker("blind-worker", prefix)
    out = curate(PIPELINE[0], hidden, ["--engine", "spark", "--spark-master", lone_spark_master.url], env=spark_env(), timeout=180)
    line = one_line_error(out)
    assert line.startswith("curate stage: error: Spark executor "), line
    assert f"cannot see --pool {hidden / 'pool'} (No such file or directory)" in line, line
    assert not (hidden / "pool" / "columns").exists()
