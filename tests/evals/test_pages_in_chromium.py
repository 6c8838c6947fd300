"""The filter report and the leaderboard as a user sees them: each page made by its CLI, opened in headless
Chromium at 1280 px (DevTools protocol, tests/evals/chromium.py), measured in the page and saved as a
screenshot under the test's tmp_path.

Checked: every <img> decoded (naturalWidth > 0); no threshold label's box meets a histogram bar, another
text of its plot, or the plot's edge; nothing overflows the page sideways; the page is not blank.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.page import page
from evals.leaderboard import main as leaderboard_main
from evals.tasks import DEFAULT_TASKS, load_tasks
from tests.curate.helpers import write_metadata_pool, write_shard_pool
from tests.curate.report_pools import COPIES, curate, dedup_report
from tests.evals.chromium import CHROMIUM, Chromium

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (`scripts/ensure-system-deps.sh "
                                                         "test` installs it; Debian: apt-get install chromium)")

#: runs in the page: what the test asserts on, as one JSON-able object
MEASURE = r"""(() => {
  const box = e => e.getBoundingClientRect();
  const meet = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 0.5 &&
                         Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 0.5;
  const plots = [...document.querySelectorAll('svg.plot')].map(svg => {
    const labels = [...svg.querySelectorAll('.threshold-label')];
    const bars = [...svg.querySelectorAll('.bar')];
    const texts = [...svg.querySelectorAll('text')];
    const frame = box(svg);
    return {
      id: svg.id, labels: labels.length, bars: bars.length,
      on_bars: labels.filter(l => bars.some(b => meet(box(l), box(b)))).map(l => l.id),
      on_text: labels.filter(l => texts.some(t => t !== l && meet(box(l), box(t)))).map(l => l.id),
      outside: labels.filter(l => { const b = box(l); return b.left < frame.left || b.right > frame.right ||
                                                              b.top < frame.top || b.bottom > frame.bottom; }).map(l => l.id),
    };
  });
  const root = document.documentElement;
  return {
    title: document.title,
    images: [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt})),
    plots: plots,
    page_width: root.scrollWidth, view_width: root.clientWidth,
    cut_tables: [...document.querySelectorAll('.scroll')].filter(d => d.scrollWidth > d.clientWidth + 1).length,
    sections: [...document.querySelectorAll('section.board')].map(s => s.dataset.section),
  };
})()"""


def render(html_file: Path, tmp_path: Path, name: str) -> tuple[dict, np.ndarray]:
    """(the page's measurements, its screenshot's pixels); the screenshot stays at tmp_path/<name>.png."""
    with Chromium(tmp_path / f"profile-{name}") as browser:
        browser.open(html_file)
        measured = browser.evaluate(MEASURE)
        shot = browser.screenshot(tmp_path / f"{name}.png")
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (2000, 1280)
    return measured, pixels


def assert_laid_out(m: dict, html_file: Path) -> None:
    assert m["images"] and all(i["ok"] for i in m["images"]), [i for i in m["images"] if not i["ok"]]
    assert len(m["images"]) == html_file.read_text().count("<img ")
    assert m["page_width"] <= m["view_width"], f"the page is {m['page_width']} px wide in a {m['view_width']} px window"
    for p in m["plots"]:
        assert p["bars"] > 0, p
        assert not p["on_bars"] and not p["on_text"] and not p["outside"], p


# -- the filter report -----------------------------------------------------------------------------------------


def test_report_renders_its_images_and_labels_clear_of_the_bars(tmp_path):
    write_shard_pool(tmp_path / "pool", [60, 60], seed=4)
    res = curate("run", "--pool", tmp_path / "pool", "--filter", "basic", "--filter", "clip_score", "--fraction", "0.5",
                 "--arch", "b32", "--output", tmp_path / "out", "--processes", "1", "--no-reshard")
    assert res.returncode == 0, res.stderr[-2000:]
    report = tmp_path / "out" / "report.html"
    m, pixels = render(report, tmp_path, "report")
    assert m["title"] == "curate run report"
    assert_laid_out(m, report)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert len(m["images"]) >= 1 + stats["report"]["images"] and stats["report"]["images"] > 0
    assert [p["labels"] for p in m["plots"]] == [1]  # the B/32 histogram and its one threshold
    blue = ((pixels[..., 0] < 90) & (pixels[..., 2] > 150)).sum()  # the plots' bars
    assert blue > 2000 and len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 500  # and the thumbnails


def test_report_of_a_metadata_only_pool_renders(tmp_path):
    write_metadata_pool(tmp_path / "pool", [400, 300], seed=2)
    res = curate("run", "--pool", tmp_path / "pool", "--filter", "laion2b", "--output", tmp_path / "out", "--processes", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    m, _ = render(tmp_path / "out" / "report.html", tmp_path, "metadata-report")
    assert_laid_out(m, tmp_path / "out" / "report.html")
    assert [i["alt"] for i in m["images"]] == ["funnel"] and len(m["plots"]) == 1


def test_report_shows_each_duplicate_beside_its_kept_copy(tmp_path):
    out, uids = dedup_report(tmp_path)
    m, _ = render(out / "report.html", tmp_path, "dedup-report")
    assert_laid_out(m, out / "report.html")
    kept_alts = [i["alt"] for i in m["images"]]
    for j, kept in COPIES.items():  # each rejected copy's image and, next to it, the one its group kept
        assert uids[j] in kept_alts and uids[kept] in kept_alts


def test_the_label_check_finds_a_label_on_the_bars(tmp_path):
    """The measurement can fail: the label drawn inside the plot, as the report used to, is found on the bars."""
    from curate.report import histogram_layout, plot_svg

    plot = histogram_layout(np.random.default_rng(0).normal(0.3, 0.03, 5000), [0.3], "label on the bars")
    top = min(s.y0 for s in plot.shapes if s.cls == "bar")
    shapes = [replace(s, y0=top + 2) if s.cls == "threshold-label" else s for s in plot.shapes]
    bad = tmp_path / "bad.html"
    bad.write_text(page("bad", plot_svg(replace(plot, shapes=shapes), "hist-bad", "bad")))
    m, _ = render(bad, tmp_path, "bad")
    assert m["plots"][0]["on_bars"] == [next(re.finditer(r"id='(hist-bad-threshold-label-\d+)'", bad.read_text())).group(1)]


# -- the leaderboard -------------------------------------------------------------------------------------------


def _run(path: Path, n_tasks: int, value: float, info: dict | None) -> Path:
    keys = [t.key for t in load_tasks(DEFAULT_TASKS) if t.scored][:n_tasks]
    path.mkdir(parents=True)
    (path / "eval_results.jsonl").write_text("".join(json.dumps({"key": k, "main_metric": value}) + "\n" for k in keys))
    if info is not None:
        (path / "info.json").write_text(json.dumps(info))
    return path


def test_leaderboard_page_renders_its_sections(tmp_path, capsys):
    long_name = "clip-score-l14-30pct-then-image-based-intersection-with-a-very-long-run-folder-name-" * 2
    runs = [_run(tmp_path / "standard", 38, 0.40, {"scale": "medium", "non_standard": {}}),
            _run(tmp_path / long_name.rstrip("-"), 38, 0.35, {"scale": "medium"}),
            _run(tmp_path / "siglip", 38, 0.50, {"scale": "medium", "non_standard": {"samples_seen": 512, "loss": "siglip"}}),
            _run(tmp_path / "never-evaluated", 0, 0.0, {"scale": "medium"})]
    html_file = tmp_path / "leaderboard.html"
    assert leaderboard_main([*map(str, runs), "--format", "html", "--output", str(html_file)]) == 0
    capsys.readouterr()
    m, pixels = render(html_file, tmp_path, "leaderboard")
    assert m["title"] == "evaluate leaderboard" and not m["images"] and not m["plots"]
    assert m["page_width"] <= m["view_width"] and m["cut_tables"] == 0  # long names wrap; no table needs scrolling
    assert m["sections"] == ["standard", "non-standard: loss=siglip, samples_seen=512", "partial"]
    assert (pixels < 250).any(axis=2).sum() > 10000  # text and tables, not a blank page

