"""OUT/report.html: self-contained, with plots as PNG too, and it renders with its images in headless Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from curate.engines import LocalEngine
from curate.pool import Pool
from curate.run import run_filters
from filters.registry import build_filter
from tests.curate.helpers import write_metadata_pool, write_shard_pool

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-extensions",
         "--no-first-run", "--hide-scrollbars"]


def chromium(*args, tmp_path) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def run(pool_root, filters, out):
    with LocalEngine(1) as engine:
        return run_filters(Pool(pool_root), filters, out, engine)


@pytest.fixture(scope="module")
def shard_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("shardpool")
    write_shard_pool(root, [60, 60], seed=4)
    out = root / "out"
    stats = run(root, [build_filter("basic"), build_filter("clip_score", fraction=0.5, arch="b32")], out)
    return out, stats


def test_report_is_self_contained_with_png_plots(shard_report):
    out, stats = shard_report
    page = (out / "report.html").read_text()
    srcs = re.findall(r"""src=['"]([^'"]+)['"]""", page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)  # nothing outside the page
    assert not re.search(r"""(href|src)=['"](https?:|file:|/)""", page)
    for name in ("funnel.png", "hist_clip_b32_similarity_score.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 600
    assert stats["report"]["images"] > 0  # example thumbnails came from the pool's shards
    # the funnel, the histogram with its threshold, and kept and rejected examples of each step
    assert "valid_uid" in page and "clip_score[b32 top 50%]" in page
    thr = stats["thresholds"][0]["threshold"]
    assert f"{thr:.6g}" in page
    assert page.count("class='card kept'") > 0 and page.count("class='card rejected'") > 0
    assert json.loads((out / "stats.json").read_text())["report"]["html"] == "report.html"
    assert json.loads((out / "timings.json").read_text())["report"] >= 0


@needs_chromium
def test_report_renders_with_its_images_in_chromium(shard_report, tmp_path):
    out, stats = shard_report
    url = (out / "report.html").resolve().as_uri()
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", url, tmp_path=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    ok = re.search(r'data-images-ok="(\d+)"', dom.stdout)
    broken = re.search(r'data-images-broken="(\d+)"', dom.stdout)
    assert ok and broken, "the page's load script did not run"
    n_img = len(re.findall(r"<img ", (out / "report.html").read_text()))
    assert int(broken.group(1)) == 0 and int(ok.group(1)) == n_img >= 2 + stats["report"]["images"]
    shot = tmp_path / "shot.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1280,2000", url, tmp_path=tmp_path)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (2000, 1280)
    # not a blank page: the blue bars of the plots are there, and many colours (the thumbnails)
    blue = ((pixels[..., 0] < 90) & (pixels[..., 2] > 150)).sum()
    assert blue > 2000
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 500


@needs_chromium
def test_metadata_only_report_shows_captions_and_renders(tmp_path):
    write_metadata_pool(tmp_path / "pool", [400, 300], seed=2)
    stats = run(tmp_path / "pool", [build_filter("laion2b")], tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert stats["report"]["images"] == 0 and "(no image in the pool)" in page and "metadata only" in page
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", (tmp_path / "out" / "report.html").as_uri(), tmp_path=tmp_path)
    assert 'data-images-broken="0"' in dom.stdout and 'data-images-ok="2"' in dom.stdout  # funnel + histogram


def test_histogram_marks_the_threshold():
    from curate.report import histogram_png

    png = histogram_png(np.random.default_rng(0).normal(0.3, 0.05, 5000), [0.35], "x")
    with Image.open(io.BytesIO(png)) as im:
        px = np.asarray(im.convert("RGB"))
    red = (px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] < 60)
    cols = np.flatnonzero(red.sum(axis=0) > 100)  # a full-height vertical line
    assert len(cols) >= 1


def test_thumbnails_bound_pixels_on_the_header(monkeypatch):
    """An example image over the pixel bound is left out of the page before it is decoded."""
    from curate import report
    from curate.signals.decode import DecodeLimits

    def png(w, h):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
        return buf.getvalue()

    small, large = png(8, 8), png(20, 20)
    monkeypatch.setattr(report, "PIXELS_ONLY", DecodeLimits(max_pixels=100))
    assert report._thumbnail_uri(small, 16).startswith("data:image/jpeg;base64,")
    assert report._thumbnail_uri(large, 16) is None  # a valid image, over this bound
