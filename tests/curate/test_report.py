"""OUT/report.html: self-contained, with plots as PNG too (tests/evals/test_pages_in_chromium.py renders it)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from curate.engines import LocalEngine
from curate.pool import Pool
from curate.run import run_filters
from filters.registry import build_filter
from tests.curate.helpers import write_metadata_pool, write_shard_pool


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
    # each histogram is inline SVG: its bars and its threshold label are elements a browser can measure
    assert "<svg " in page and "class='bar'" in page and f"threshold {thr:.4g}</text>" in page
    assert json.loads((out / "stats.json").read_text())["report"]["html"] == "report.html"
    assert json.loads((out / "timings.json").read_text())["report"] >= 0


def test_metadata_only_report_shows_captions(tmp_path):
    write_metadata_pool(tmp_path / "pool", [400, 300], seed=2)
    stats = run(tmp_path / "pool", [build_filter("laion2b")], tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert stats["report"]["images"] == 0 and "(no image in the pool)" in page and "metadata only" in page
    assert page.count("<img ") == 1 and page.count("<svg ") == 1  # the funnel, and the B/32 score's histogram


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


def _red(px: np.ndarray) -> np.ndarray:
    return (px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] < 60)


@pytest.mark.parametrize("threshold", [0.22, 0.31, 0.40])
def test_threshold_label_sits_above_the_bars(threshold):
    """The threshold's label is drawn above the tallest bar (its own row), never over the bars, wherever the line is."""
    from curate.report import histogram_png

    values = np.random.default_rng(1).normal(0.3, 0.03, 20000)
    with Image.open(io.BytesIO(histogram_png(values, [threshold], "clip score"))) as im:
        px = np.asarray(im.convert("RGB")).astype(int)
    red = _red(px)
    line = np.flatnonzero(red.sum(axis=0) > 100)
    assert len(line)
    text = red.copy()
    text[:, max(line.min() - 2, 0): line.max() + 3] = False  # the label's red pixels, without the line
    blue = (px[..., 0] < 90) & (px[..., 2] > 150)
    assert text.sum() > 20 and blue.any()
    assert np.flatnonzero(text.any(axis=1)).max() < np.flatnonzero(blue.any(axis=1)).min()


def test_threshold_labels_stack_in_their_own_rows():
    from curate.report import histogram_layout

    plot = histogram_layout(np.linspace(0, 1, 500), [0.4, 0.41], "two thresholds")
    labels = [s for s in plot.shapes if s.cls == "threshold-label"]
    bars_top = min(s.y0 for s in plot.shapes if s.cls == "bar")
    assert len(labels) == 2 and labels[0].y0 != labels[1].y0
    assert all(s.y0 + s.size + 2 < bars_top for s in labels)
