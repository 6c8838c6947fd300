"""`curate download` keeps the pool and its counts true: reruns with changed lists, half-written files,
bad rows, repeated uids and retries of failed rows (issue 16, items 5, 6, 7, 9, 10, 11 and --retry-failed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.cli import main as curate_main
from curate.demo.metadata import random_uids
from curate.demo.server import LoopbackImageServer
from curate.download import DownloadOptions, PlanError, UrlListError, download
from curate.engines import LocalEngine
from tests.curate.helpers import jpeg_bytes, tar_samples
from tests.faults.hostile_server import HostileServer

OPTS = DownloadOptions(image_size=32, shard_size=10, threads=4, timeout=5, allow_private=True)


def good_web(web: Path, n: int, seed: int = 0) -> list[str]:
    web.mkdir(parents=True, exist_ok=True)
    uids = random_uids(np.random.default_rng(seed), n)
    for i, uid in enumerate(uids):
        (web / f"{uid}.jpg").write_bytes(jpeg_bytes(seed * 1000 + i))
    return uids


def url_list(server, uids, path: Path) -> Path:
    pq.write_table(pa.table({"uid": uids, "url": [server.url(f"{u}.jpg") for u in uids],
                             "text": [f"caption {i}" for i in range(len(uids))]}), path)
    return path


def pool_uids(pool: Path) -> list[str]:
    got = []
    for tar in sorted((pool / "shards").glob("*.tar")):
        got += [json.loads(f["json"])["uid"] for _, f in tar_samples(tar)]
    return got


def shard_mtimes(pool: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (pool / "shards").iterdir()}


def leftovers(pool: Path) -> list[str]:
    return [str(p.relative_to(pool)) for p in pool.rglob("*") if p.name.endswith(".tmp") or p.name == "_tmp"]


def test_a_list_that_gained_rows_fetches_exactly_the_new_rows_into_new_shards(tmp_path):
    uids = good_web(tmp_path / "web", 45)
    pool = tmp_path / "pool"
    with LoopbackImageServer(tmp_path / "web") as server, LocalEngine(1) as engine:
        first = download(str(url_list(server, uids[:30], tmp_path / "a.parquet")), pool, engine, OPTS)
        before = shard_mtimes(pool)
        second = download(str(url_list(server, uids, tmp_path / "b.parquet")), pool, engine, OPTS)
    assert first["success"] == 30 and first["shards"] == 3
    assert second["input_rows"] == 45 and second["success"] == 45 and second["not_attempted"] == 0
    assert second["reconciled"] and second["shards"] == 5
    after = shard_mtimes(pool)
    assert {k: after[k] for k in before} == before  # finished shards were not touched
    assert sorted(set(after) - set(before)) == ["00000003.parquet", "00000003.tar", "00000003_stats.json",
                                                "00000004.parquet", "00000004.tar", "00000004_stats.json"]
    assert sorted(pool_uids(pool)) == sorted(uids)  # each uid once
    meta = pq.read_table(pool / "metadata")
    assert meta.column("uid").to_pylist() == uids
    assert leftovers(pool) == []


def test_a_list_that_lost_rows_is_refused_and_nothing_changes(tmp_path):
    uids = good_web(tmp_path / "web", 20)
    pool = tmp_path / "pool"
    with LoopbackImageServer(tmp_path / "web") as server:
        with LocalEngine(1) as engine:
            download(str(url_list(server, uids, tmp_path / "a.parquet")), pool, engine, OPTS)
        before = {p: p.read_bytes() for p in pool.rglob("*") if p.is_file()}
        shorter = url_list(server, uids[:15], tmp_path / "b.parquet")
        with LocalEngine(1) as engine, pytest.raises(PlanError, match=r"5 row\(s\) this pool already planned"):
            download(str(shorter), pool, engine, OPTS)
        rc = curate_main(["download", "--url-list", str(shorter), "--pool", str(pool), "--allow-private"])
    assert rc == 2
    assert {p: p.read_bytes() for p in pool.rglob("*") if p.is_file()} == before


def test_the_counts_fail_to_reconcile_when_a_shard_lists_rows_the_list_lacks(tmp_path):
    uids = good_web(tmp_path / "web", 10)
    pool = tmp_path / "pool"
    with LoopbackImageServer(tmp_path / "web") as server:
        path = url_list(server, uids, tmp_path / "a.parquet")
        with LocalEngine(1) as engine:
            assert download(str(path), pool, engine, OPTS)["reconciled"]
        # a shard copied in from elsewhere: finished, but its row is not in this pool's list
        stranger = random_uids(np.random.default_rng(99), 1)
        pq.write_table(pa.table({"uid": stranger, "status": ["success"], "error_message": pa.array([None], pa.string())}),
                       pool / "shards" / "00000007.parquet")
        (pool / "shards" / "00000007_stats.json").write_text(json.dumps({"count": 1, "successes": 1}))
        with LocalEngine(1) as engine:
            s = download(str(path), pool, engine, OPTS)
        assert s["success"] == 11 and not s["reconciled"]
        assert curate_main(["download", "--url-list", str(path), "--pool", str(pool), "--allow-private"]) == 1


def test_a_half_written_stats_file_marks_its_shard_unfinished(tmp_path):
    uids = good_web(tmp_path / "web", 30)
    pool = tmp_path / "pool"
    with LoopbackImageServer(tmp_path / "web") as server:
        path = url_list(server, uids, tmp_path / "a.parquet")
        with LocalEngine(1) as engine:
            download(str(path), pool, engine, OPTS)
            stats = pool / "shards" / "00000001_stats.json"
            stats.write_text(stats.read_text()[:25])  # as a kill leaves img2dataset's in-place write
            untouched = (pool / "shards" / "00000000.tar").stat().st_mtime_ns
            s = download(str(path), pool, engine, OPTS)
    assert json.loads(stats.read_text())["successes"] == 10  # redone, whole
    assert (pool / "shards" / "00000000.tar").stat().st_mtime_ns == untouched
    assert s["success"] == 30 and s["reconciled"]
    assert sorted(pool_uids(pool)) == sorted(uids)


def test_a_caption_that_is_not_utf8_refuses_its_row_only(tmp_path):
    uids = good_web(tmp_path / "web", 12)
    with LoopbackImageServer(tmp_path / "web") as server:
        lines = [json.dumps({"uid": u, "url": server.url(f"{u}.jpg"), "text": f"caption {i}"}).encode()
                 for i, u in enumerate(uids)]
        lines[4] = lines[4].replace(b"caption 4", b"caption \xff\xfe 4")
        (tmp_path / "l.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        with LocalEngine(1) as engine:
            s = download(str(tmp_path / "l.jsonl"), tmp_path / "pool", engine, OPTS)
    assert s["refused"] == {"invalid_text": 1} and s["success"] == 11 and s["reconciled"]
    assert sorted(pool_uids(tmp_path / "pool")) == sorted(uids[:4] + uids[5:])
    meta = pq.read_table(tmp_path / "pool" / "metadata")  # readable: the bad bytes are stored replaced
    assert meta.column("text")[4].as_py() == "caption \ufffd\ufffd 4"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_header_only_list_is_one_clear_error_and_makes_no_pool(tmp_path, capsys, fmt):
    path = tmp_path / f"l.{fmt}"
    if fmt == "csv":
        path.write_text("uid,url,text\n")
    else:
        pq.write_table(pa.table({"uid": pa.array([], pa.string()), "url": pa.array([], pa.string()),
                                 "text": pa.array([], pa.string())}), path)
    assert curate_main(["download", "--url-list", str(path), "--pool", str(tmp_path / "pool")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: the URL list has no rows" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pool").exists()


def test_a_url_column_of_lists_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "l.parquet"
    pq.write_table(pa.table({"uid": ["0" * 32], "url": [["http://a/1.jpg"]], "text": ["t"]}), path)
    assert curate_main(["download", "--url-list", str(path), "--pool", str(tmp_path / "pool")]) == 2
    err = capsys.readouterr().err
    assert "column 'url' holds list<" in err and "expected text" in err and str(path) in err
    assert not (tmp_path / "pool").exists()


def test_repeated_uids_enter_the_metadata_once(tmp_path):
    uids = good_web(tmp_path / "web", 8)
    with LoopbackImageServer(tmp_path / "web") as server:
        path = url_list(server, uids + [uids[2], uids[2], uids[5].upper()], tmp_path / "l.parquet")
        with LocalEngine(1) as engine:
            s = download(str(path), tmp_path / "pool", engine, OPTS)
    assert s["refused"] == {"duplicate_uid": 3} and s["success"] == 8 and s["reconciled"]
    meta = pq.read_table(tmp_path / "pool" / "metadata")
    assert meta.column("uid").to_pylist() == uids  # one row per uid, as fetched
    assert sorted(pool_uids(tmp_path / "pool")) == sorted(uids)


def test_the_pool_may_not_hold_the_url_list(tmp_path, capsys):
    pool = tmp_path / "pool"
    pool.mkdir()
    pq.write_table(pa.table({"uid": ["0" * 32], "url": ["http://a/1.jpg"], "text": ["t"]}), pool / "l.parquet")
    assert curate_main(["download", "--url-list", str(pool / "l.parquet"), "--pool", str(pool)]) == 2
    assert "--pool" in capsys.readouterr().err
    assert sorted(p.name for p in pool.iterdir()) == ["l.parquet"]


def test_retry_failed_fetches_only_the_failed_rows_again_into_new_shards(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    uids = random_uids(np.random.default_rng(5), 15)
    with HostileServer(web, tmp_path / "requests.log") as server:
        urls = []
        for i, uid in enumerate(uids):
            (web / f"{i}.jpg").write_bytes(jpeg_bytes(i))
            # every third row answers 503 once, then the image; one row is a plain 404
            urls.append(f"{server.base}/flaky/1/{i}.jpg" if i % 3 == 0 else f"{server.base}/img/{i}.jpg")
        urls[1] = f"{server.base}/img/missing.jpg"
        pq.write_table(pa.table({"uid": uids, "url": urls, "text": ["a b c"] * 15}), tmp_path / "l.parquet")
        cmd = ["download", "--url-list", str(tmp_path / "l.parquet"), "--pool", str(tmp_path / "pool"),
               "--allow-private", "--shard-size", "10", "--threads", "4", "--processes", "1", "--image-size", "32"]
        assert curate_main(cmd) == 0
        stats = lambda: json.loads((tmp_path / "pool" / "download_stats.json").read_text())
        first = stats()
        before = shard_mtimes(tmp_path / "pool")
        asked_before = len(server.requested())
        assert curate_main(cmd + ["--retry-failed", "5xx"]) == 0
        second = stats()
        retried_paths = server.requested()[asked_before:]
        assert curate_main(cmd + ["--retry-failed", "5xx"]) == 0  # nothing left to retry: no new shard
        third = stats()
    assert first["failure_reasons"] == {"http_5xx": 5, "http_404": 1} and first["success"] == 9
    assert sorted(retried_paths) == sorted(f"/flaky/1/{i}.jpg" for i in range(0, 15, 3))  # the 404 is not retried
    assert second["success"] == 14 and second["failure_reasons"] == {"http_404": 1}
    assert second["retried"] == 5 and second["reconciled"] and second["shards"] == 3
    after = shard_mtimes(tmp_path / "pool")
    assert {k: after[k] for k in before} == before
    assert third == second
    assert sorted(pool_uids(tmp_path / "pool")) == sorted(u for i, u in enumerate(uids) if i != 1)
    assert leftovers(tmp_path / "pool") == []


def test_a_killed_retry_rerun_finishes_that_retry_and_starts_no_other(tmp_path):
    """Rows that fail every time: an unbroken --retry-failed makes one retry plan; killed in it and rerun, the
    same (the rerun finishes the killed retry, it does not add a second round)."""
    web = tmp_path / "web"
    web.mkdir()
    uids = random_uids(np.random.default_rng(8), 6)
    with HostileServer(web, tmp_path / "requests.log") as server:
        urls = []
        for i in range(6):
            (web / f"{i}.jpg").write_bytes(jpeg_bytes(i))
            urls.append(f"{server.base}/flaky/1000/{i}.jpg" if i < 2 else f"{server.base}/img/{i}.jpg")
        pq.write_table(pa.table({"uid": uids, "url": urls, "text": ["a b c"] * 6}), tmp_path / "l.parquet")

        def run(pool, *extra):
            assert curate_main(["download", "--url-list", str(tmp_path / "l.parquet"), "--pool", str(pool),
                                "--allow-private", "--shard-size", "10", "--processes", "1", *extra]) == 0
            return json.loads((pool / "_download" / "plans.json").read_text())["plans"]

        run(tmp_path / "unbroken")
        unbroken = run(tmp_path / "unbroken", "--retry-failed", "5xx")
        run(tmp_path / "killed")
        run(tmp_path / "killed", "--retry-failed", "5xx")
        (tmp_path / "killed" / "shards" / "00000001_stats.json").unlink()  # as a kill inside the retry's shard leaves it
        resumed = run(tmp_path / "killed", "--retry-failed", "5xx")
    assert [p["kind"] for p in unbroken] == ["list", "retry"]
    assert resumed == unbroken


def test_unreadable_plans_and_unknown_retry_reasons_are_one_line_errors(tmp_path, capsys):
    uids = good_web(tmp_path / "web", 5)
    pool = tmp_path / "pool"
    with LoopbackImageServer(tmp_path / "web") as server:
        path = url_list(server, uids, tmp_path / "a.parquet")
        base = ["download", "--url-list", str(path), "--pool", str(pool), "--allow-private"]
        assert curate_main(base + ["--retry-failed", "timeout,teapot"]) == 2
        assert "--retry-failed: unknown reason 'teapot'" in capsys.readouterr().err
        assert curate_main(base) == 0
        capsys.readouterr()
        (pool / "_download" / "plans.json").write_text('{"shard_size": 10, "pla')  # as a hand edit gone wrong
        assert curate_main(base) == 2
    err = capsys.readouterr().err
    assert "plans.json: unreadable download plan" in err and len(err.strip().splitlines()) == 1


def test_a_finished_shard_whose_table_disagrees_with_its_stats_breaks_the_reconciliation(tmp_path):
    uids = good_web(tmp_path / "web", 20)
    pool = tmp_path / "pool"
    with LoopbackImageServer(tmp_path / "web") as server:
        path = url_list(server, uids, tmp_path / "a.parquet")
        with LocalEngine(1) as engine:
            assert download(str(path), pool, engine, OPTS)["reconciled"]
            table = pool / "shards" / "00000001.parquet"
            pq.write_table(pq.read_table(table).slice(0, 7), table)  # 3 rows lost from a finished shard
            s = download(str(path), pool, engine, OPTS)
    assert not s["reconciled"]
    assert s["inconsistent_shards"] == ["00000001.parquet: 7 rows but its stats count 10"]
