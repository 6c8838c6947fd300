"""Paths leave the driver absolute, and the cluster checks say what is wrong in one line (no cluster needed).

The end-to-end checks on real Dask and Spark clusters are in test_real_clusters.py (`-m clusters`).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from curate.cli import build_parser
from curate.commands.common import absolute_paths, shared_paths
from curate.engines import ClusterError, SharedPaths, make_engine
from curate.engines.cluster import host_ports, raise_if_blind, require_reachable, worker_view


def parse(argv: list[str]):
    parser, _ = build_parser()
    return absolute_paths(parser.parse_args(argv))


def test_every_path_option_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"")
    args = parse(["run", "--pool", "pool", "--output", "out", "--config", "recipes/r.yaml", "--filter", "image_based",
                  "--set", "image_based.targets=feats.npy", "--set", "basic.min_words=3",
                  "--clip-checkpoint", "l14=ckpt/ViT-L-14.pt", "--fasttext-model", "~/lid.176.bin"])
    assert args.pool == str(tmp_path / "pool") and args.output == str(tmp_path / "out")
    assert args.config == str(tmp_path / "recipes" / "r.yaml")
    assert args.overrides == [f"image_based.targets={tmp_path / 'feats.npy'}", "basic.min_words=3"]
    assert args.clip_checkpoint == [f"l14={tmp_path / 'ckpt' / 'ViT-L-14.pt'}"]
    assert args.fasttext_model == str(Path.home() / "lid.176.bin")

    args = parse(["stage", "--pool", "./p/../pool", "--model", "ViT-B-32", "--pretrained", "weights.pt",
                  "--model", "ViT-L-14", "--pretrained", "openai"])
    assert args.pool == str(tmp_path / "pool")
    assert args.pretrained == [str(tmp_path / "weights.pt"), "openai"]  # a tag stays a tag
    assert parse(["reshard", "--pool", "/abs/pool", "--subset", "s.npy", "--output", "o"]).subset == str(tmp_path / "s.npy")


def test_urls_with_a_scheme_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = parse(["download", "--url-list", "s3://bucket/urls.parquet", "--pool", "pool"])
    assert args.url_list == "s3://bucket/urls.parquet" and args.pool == str(tmp_path / "pool")


def test_what_workers_must_see(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool").mkdir()
    (tmp_path / "s.npy").write_bytes(b"")
    paths = shared_paths(parse(["reshard", "--pool", "pool", "--subset", "s.npy", "--output", "o"]))
    assert paths == SharedPaths(read={"--pool": str(tmp_path / "pool"), "--subset": str(tmp_path / "s.npy")},
                                write={"--output": str(tmp_path / "o")})
    # stage writes into the pool; a download's pool need not exist yet (only its nearest folder must be writable)
    assert shared_paths(parse(["stage", "--pool", "pool"])).write == {"--pool": str(tmp_path / "pool")}
    assert shared_paths(parse(["download", "--url-list", "u.parquet", "--pool", "new"])) == \
        SharedPaths(read={}, write={"--pool": str(tmp_path / "new")})
    # an object store is not the workers' filesystem: nothing to stat there
    assert shared_paths(parse(["run", "--pool", "s3://b/pool", "--filter", "basic", "--output", "s3://b/out"])) == SharedPaths()


def test_worker_view_names_what_it_cannot_see(tmp_path):
    (tmp_path / "pool").mkdir()
    host, problems = worker_view(SharedPaths(read={"--pool": str(tmp_path / "pool")}, write={"--output": str(tmp_path / "a" / "b")}))
    assert host == socket.gethostname() and problems == []
    _, problems = worker_view(SharedPaths(read={"--pool": str(tmp_path / "gone")}))
    assert problems == [f"cannot see --pool {tmp_path / 'gone'} (No such file or directory)"]
    with pytest.raises(ClusterError) as e:
        raise_if_blind({"Dask worker tcp://10.0.0.2:1234": ("node2", problems), "Dask worker tcp://10.0.0.1:1234": ("node1", [])})
    assert str(e.value) == (f"Dask worker tcp://10.0.0.2:1234 on host node2 cannot see --pool {tmp_path / 'gone'} (No such file "
                            f"or directory): every worker must see the pool and outputs at the same absolute paths as this "
                            f"machine (a shared filesystem)")
    raise_if_blind({"a": ("h", [])})  # nothing wrong: no error


def test_addresses_and_a_closed_port():
    assert host_ports("tcp://127.0.0.1:8786") == [("127.0.0.1", 8786)]
    assert host_ports("spark://m1:7077,m2:7078") == [("m1", 7077), ("m2", 7078)]
    assert host_ports("inproc://10.0.0.1/123/1") == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ClusterError, match=rf"^cannot reach Spark master spark://127.0.0.1:{port}: 127.0.0.1:{port}: Connection refused$"):
            require_reachable(f"spark://127.0.0.1:{port}", "Spark master")
        with pytest.raises(ClusterError, match="cannot reach Dask scheduler"):
            make_engine("dask", dask_scheduler=f"tcp://127.0.0.1:{port}")


def test_cli_on_a_closed_port_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "curate.cli", "stage", "--pool", str(tmp_path), "--engine", "dask",
                              "--dask-scheduler", f"tcp://127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"curate stage: error: cannot reach Dask scheduler tcp://127.0.0.1:{port}: "
                                       f"127.0.0.1:{port}: Connection refused"]
