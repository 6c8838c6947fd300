"""`curate download` against a real HTTP server on 127.0.0.1, with img2dataset doing the fetching."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.demo.metadata import random_uids
from curate.demo.server import LoopbackImageServer
from curate.download import DownloadOptions, UrlListError, download, read_url_list
from curate.engines import LocalEngine
from tests.curate.helpers import tar_samples


def _image(seed, size=(64, 48), color=None):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) if color is None else np.full((size[1], size[0], 3), color, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG" if color is not None else "JPEG", quality=90)
    return buf.getvalue()


def make_web(web, n, seed=0, delay_kinds=False):
    """n rows: mostly good images, plus dead, corrupt, file://, ftp:// and redirect-to-file rows."""
    web.mkdir(parents=True, exist_ok=True)
    uids = random_uids(np.random.default_rng(seed), n)
    kinds = []
    for i, uid in enumerate(uids):
        kind = ["ok"] * 6 + ["dead", "corrupt", "file", "ftp", "redirect"]
        k = kind[i % len(kind)]
        kinds.append(k)
        if k == "ok":
            (web / f"{uid}.jpg").write_bytes(_image(i))
        elif k == "corrupt":
            (web / f"{uid}.jpg").write_bytes(b"\xff\xd8\xff garbage" * 10)
    return uids, kinds


def url_table(server, uids, kinds):
    urls = []
    for uid, k in zip(uids, kinds):
        urls.append({
            "file": "file:///etc/passwd",
            "ftp": f"ftp://127.0.0.1/{uid}.jpg",
            # urllib alone would follow a redirect to ftp://; the downloader must refuse it
            "redirect": f"{server.base}/redirect/ftp//127.0.0.1/{uid}.jpg",
        }.get(k, server.url(f"{uid}.jpg")))
    return pa.table({"uid": uids, "url": urls, "text": [f"caption {i} of a thing" for i in range(len(uids))]})


OPTS = DownloadOptions(image_size=64, shard_size=20, threads=4, timeout=5, allow_private=True)  # the server is on loopback


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_download_formats_counts_and_refusals(tmp_path, fmt):
    uids, kinds = make_web(tmp_path / "web", 55)
    with LoopbackImageServer(tmp_path / "web") as server:
        table = url_table(server, uids, kinds)
        path = tmp_path / f"list.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path)
        elif fmt == "csv":
            pacsv.write_csv(table, path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
        with LocalEngine(2) as engine:
            s = download(str(path), tmp_path / "pool", engine, OPTS)
    c = Counter(kinds)
    assert s["input_rows"] == 55 and s["reconciled"]
    assert s["refused"] == {"scheme": c["file"] + c["ftp"]}
    assert s["success"] == c["ok"]
    assert s["failure_reasons"].get("http_404") == c["dead"]
    assert s["failure_reasons"].get("redirect_refused") == c["redirect"]
    assert s["failed_to_resize"] == c["corrupt"]
    assert s["refused_total"] + s["success"] + s["failed_to_download"] + s["failed_to_resize"] + s["not_attempted"] == 55
    # every written sample carries its uid in the json, and it is one of the good ones
    got = []
    for tar in sorted((tmp_path / "pool" / "shards").glob("*.tar")):
        got += [json.loads(f["json"])["uid"] for _, f in tar_samples(tar)]
    assert sorted(got) == sorted(u for u, k in zip(uids, kinds) if k == "ok")
    # the pool keeps the whole list as DataComp metadata
    meta = pq.read_table(tmp_path / "pool" / "metadata" / "00000000.parquet")
    assert meta.column("uid").to_pylist() == uids


def test_bad_url_lists(tmp_path):
    pq.write_table(pa.table({"uid": ["0" * 32], "url": ["http://x"]}), tmp_path / "a.parquet")
    with pytest.raises(UrlListError, match="a.parquet: missing column.*text"):
        read_url_list(tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"nope")
    with pytest.raises(UrlListError, match="b.parquet: cannot read"):
        read_url_list(tmp_path / "b.parquet")
    with pytest.raises(UrlListError, match="not found"):
        read_url_list(tmp_path / "missing.csv")


def test_invalid_and_duplicate_uids_are_refused(tmp_path):
    uids, kinds = make_web(tmp_path / "web", 6)
    with LoopbackImageServer(tmp_path / "web") as server:
        t = url_table(server, uids, kinds)
        t = pa.concat_tables([t, t.slice(0, 1)])  # a duplicate uid
        bad = pa.table({"uid": ["xyz"], "url": [server.url("a.jpg")], "text": ["t"]})
        pq.write_table(pa.concat_tables([t, bad]), tmp_path / "l.parquet")
        with LocalEngine(1) as engine:
            s = download(str(tmp_path / "l.parquet"), tmp_path / "pool", engine, OPTS)
    assert s["refused"] == {"duplicate_uid": 1, "invalid_uid": 1}
    assert s["success"] == 6 and s["reconciled"]


def test_faces_are_blurred_when_boxes_are_given(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    uids = random_uids(np.random.default_rng(9), 2)
    pattern = np.zeros((64, 64, 3), np.uint8)
    pattern[::2, :, :] = 255  # stripes: blurring destroys them
    for u in uids:
        buf = io.BytesIO()
        Image.fromarray(pattern).save(buf, format="PNG")
        (web / f"{u}.jpg").write_bytes(buf.getvalue())
    with LoopbackImageServer(web) as server:
        t = pa.table({"uid": uids, "url": [server.url(f"{u}.jpg") for u in uids], "text": ["a", "b"],
                      "face_bboxes": pa.array([[[0.0, 0.0, 0.5, 0.5]], []], pa.list_(pa.list_(pa.float64())))})
        pq.write_table(t, tmp_path / "l.parquet")
        with LocalEngine(1) as engine:
            s = download(str(tmp_path / "l.parquet"), tmp_path / "pool", engine,
                         DownloadOptions(image_size=64, shard_size=10, threads=2, encode_format="png", resize_mode="no",
                                         allow_private=True))
    assert s["success"] == 2
    [tar] = sorted((tmp_path / "pool" / "shards").glob("*.tar"))
    by_uid = {json.loads(f["json"])["uid"]: f for _, f in tar_samples(tar)}
    blurred = np.asarray(Image.open(io.BytesIO(by_uid[uids[0]]["png"])).convert("RGB")).astype(int)
    clean = np.asarray(Image.open(io.BytesIO(by_uid[uids[1]]["png"])).convert("RGB")).astype(int)
    assert np.array_equal(clean, pattern)
    stripe_contrast = lambda a: np.abs(np.diff(a[:, :, 0], axis=0)).mean()
    assert stripe_contrast(blurred[8:24, 8:24]) < 0.5 * stripe_contrast(clean[8:24, 8:24])
    assert np.array_equal(blurred[48:, 48:], pattern[48:, 48:])  # outside the box untouched


SLOW_SERVER = r"""
import sys, time, threading
from http.server import ThreadingHTTPServer
from curate.demo import server as s
root = sys.argv[1]
base = s._handler(__import__('pathlib').Path(root))
class Slow(base):
    def do_GET(self):
        time.sleep(0.05)
        super().do_GET()
httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"""


def test_killed_download_resumes_without_loss_or_duplicates(tmp_path):
    uids, kinds = make_web(tmp_path / "web", 200)
    srv = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(tmp_path / "web")], stdout=subprocess.PIPE, text=True)
    try:
        port = int(srv.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        urls = [f"{base}/img/{u}.jpg" if k not in ("file", "ftp", "redirect") else "file:///etc/passwd" for u, k in zip(uids, kinds)]
        pq.write_table(pa.table({"uid": uids, "url": urls, "text": ["t"] * len(uids)}), tmp_path / "l.parquet")
        cmd = [sys.executable, "-m", "curate.cli", "download", "--url-list", str(tmp_path / "l.parquet"), "--pool",
               str(tmp_path / "pool"), "--shard-size", "10", "--threads", "2", "--processes", "2", "--image-size", "32",
               "--allow-private"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        shards = tmp_path / "pool" / "shards"
        deadline = time.time() + 120
        while time.time() < deadline and len(list(shards.glob("*_stats.json"))) < 3:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before = {p.name: p.stat().st_mtime_ns for p in shards.glob("*_stats.json")}
        assert 3 <= len(done_before) < 18, "the kill should land mid-download"
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
    finally:
        srv.kill()
    # shards finished before the kill were not downloaded again
    for name, mtime in done_before.items():
        assert (shards / name).stat().st_mtime_ns == mtime
    s = json.loads((tmp_path / "pool" / "download_stats.json").read_text())
    assert s["reconciled"] and s["not_attempted"] == 0
    got = []
    for tar in sorted(shards.glob("*.tar")):
        got += [json.loads(f["json"])["uid"] for _, f in tar_samples(tar)]
    want = sorted(u for u, k in zip(uids, kinds) if k == "ok")
    assert sorted(got) == want  # nothing lost, nothing twice
