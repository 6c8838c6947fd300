"""RUN/training.png: loss, learning rate and samples per second against the step, from RUN/log.jsonl.

Drawn with Pillow (as curate's report plots, with its helpers) so the trainer needs no plotting library.
Rewritten whole at every checkpoint and at the end, so a look at a running job shows it so far.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from curate.atomic import atomic_open
from curate.report import _fmt, _font, _png

from .logs import read_log

PLOT = "training.png"
PANELS = (("loss", "loss", "#3b6fb6"), ("lr", "learning rate", "#2ca02c"), ("samples_per_s", "samples / s", "#d62728"))


def _panel(d: ImageDraw.ImageDraw, box: tuple[int, int, int, int], steps: list[int], values: list[float],
           title: str, colour: str) -> None:
    left, top, right, bottom = box
    small = _font(12)
    d.text((left, top - 18), title, fill="black", font=_font(14))
    d.line([left, bottom, right, bottom], fill="black")
    d.line([left, top, left, bottom], fill="black")
    if not values:
        d.text((left + 10, (top + bottom) // 2), "no records yet", fill="black", font=small)
        return
    lo, hi = min(values), max(values)
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    s0, s1 = min(steps), max(steps)
    span = max(s1 - s0, 1)
    xy = [(left + (right - left) * (s - s0) / span, bottom - (bottom - top) * (v - lo) / (hi - lo))
          for s, v in zip(steps, values)]
    if len(xy) == 1:
        x, y = xy[0]
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    else:
        d.line(xy, fill=colour, width=2)
    d.text((4, top - 2), _fmt(hi), fill="black", font=small)
    d.text((4, bottom - 12), _fmt(lo), fill="black", font=small)
    d.text((left, bottom + 4), f"step {s0:,}", fill="black", font=small)
    d.text((right - 70, bottom + 4), f"step {s1:,}", fill="black", font=small)


def training_png(records: list[dict]) -> bytes:
    """Three panels, one per PANELS entry, from the step records (those with a loss)."""
    rows = [r for r in records if isinstance(r.get("loss"), (int, float)) and "step" in r]
    w, panel_h, ml, mr = 720, 170, 70, 20
    img = Image.new("RGB", (w, 20 + len(PANELS) * (panel_h + 40)), "white")
    d = ImageDraw.Draw(img)
    for i, (key, title, colour) in enumerate(PANELS):
        pts = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
        top = 40 + i * (panel_h + 40)
        _panel(d, (ml, top, w - mr, top + panel_h - 20), [p[0] for p in pts], [p[1] for p in pts], title, colour)
    return _png(img)


def write_training_plot(run_dir: str | Path) -> Path:
    """Draw RUN/training.png from RUN/log.jsonl, written whole."""
    path = Path(run_dir) / PLOT
    data = training_png(read_log(run_dir))
    with atomic_open(path, "wb") as f:
        f.write(data)
    return path
