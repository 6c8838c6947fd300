"""OUT/report.html: one self-contained page showing what a `curate run` kept and threw away.

- the funnel: rows into and out of each step (a table and a bar chart), with the parts of and/or/not steps;
- each thresholded score's histogram (from a uniform uid-hash sample of the pool) with its threshold;
- for each step, a grid of kept and rejected examples (chosen by uid hash, so the same on every engine)
  with caption, the step's values and the rule that rejected it; a rejected duplicate shows the copy its
  dedup group kept beside it; images come from the pool's shards when it has them (thumbnails), else the
  cards show captions only.

The page is one file (curate.page's skeleton and style, shared with the leaderboard): thumbnails and the
funnel are data URIs; histograms are inline SVG whose bars and threshold labels are elements (a browser
can check that no label covers a bar). Every plot is also written beside it as PNG (funnel.png,
hist_<column>.png), drawn with Pillow from the same layout.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from curate import storage
from curate.atomic import atomic_open
from curate.page import esc as _e
from curate.page import page as html_page
from curate.signals.decode import PIXELS_ONLY

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp")
THUMB = 160

# --------------------------------------------------------------------------------------------------------
# Plots (Pillow)
# --------------------------------------------------------------------------------------------------------


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # an old Pillow without scalable default font
        return ImageFont.load_default()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:,.0f}" if a >= 1000 else f"{v:.3g}"


def funnel_png(steps: list[dict]) -> bytes:
    """Horizontal bars: rows in and kept of each step."""
    font, small = _font(14), _font(12)
    labels = [s.get("label", s["filter"]) for s in steps]
    w, row_h, left, right = 900, 34, 260, 150
    h = 40 + row_h * len(steps) + 20
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), "funnel: rows in (grey) and kept (blue) per step", fill="black", font=font)
    top = max([s["rows_in"] for s in steps] + [1])
    span = w - left - right
    for i, (s, lab) in enumerate(zip(steps, labels)):
        y = 40 + i * row_h
        d.text((10, y + 8), lab if len(lab) <= 34 else lab[:33] + "…", fill="black", font=small)
        d.rectangle([left, y + 4, left + int(span * s["rows_in"] / top), y + row_h - 6], fill="#d0d0d0")
        d.rectangle([left, y + 4, left + int(span * s["kept"] / top), y + row_h - 6], fill="#3b6fb6")
        pct = 100.0 * s["kept"] / s["rows_in"] if s["rows_in"] else 0.0
        d.text((left + span + 8, y + 8), f"{s['kept']:,} ({pct:.1f}%)", fill="black", font=small)
    return _png(img)


@dataclass(frozen=True)
class Shape:
    """One drawing primitive in pixel coordinates: a rect (x0, y0, x1, y1), a line (x0, y0, x1, y1) or a text
    (x0, y0: its top edge at its anchor; anchor 'start' or 'end'). `cls` names it in the SVG (bar,
    threshold-label, ...) so a browser can find it."""

    kind: str
    x0: float
    y0: float
    x1: float = 0
    y1: float = 0
    color: str = "black"
    cls: str = ""
    text: str = ""
    size: int = 12
    width: int = 1
    anchor: str = "start"


@dataclass(frozen=True)
class Plot:
    width: int
    height: int
    shapes: list[Shape]


#: rows of the top margin: the title, then one row per threshold label, so no label sits on the bars
TITLE_ROW, LABEL_ROW = 26, 16


def histogram_layout(values: np.ndarray, threshold: list[float], title: str, bins: int = 60) -> Plot:
    """A histogram of `values` with a red line at each threshold (kept side shaded), as shapes.

    Each threshold's label sits in its own row of the top margin, above the plot area and so above every
    bar, beside its line: on the line's right when the line is in the left half, else on its left.
    """
    values = values[np.isfinite(values)]
    thr = [t for t in threshold if t is not None and np.isfinite(t)]
    w, h, ml, mr, mb = 640, 320, 60, 20, 40
    mt = TITLE_ROW + LABEL_ROW * len(thr) + 10
    h += mt - 40
    shapes = [Shape("text", 10, 8, text=title, size=14, cls="title")]
    if len(values) == 0:
        return Plot(w, h, shapes + [Shape("text", ml, h // 2, text="no values", size=14)])
    lo, hi = float(values.min()), float(values.max())
    for t in thr:
        lo, hi = min(lo, t), max(hi, t)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.02
    lo, hi = lo - pad, hi + pad
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    pw, ph = w - ml - mr, h - mt - mb
    top = max(int(counts.max()), 1)

    def x_of(v: float) -> int:
        return ml + int(pw * (v - lo) / (hi - lo))

    for t in thr:  # the kept side (>= threshold)
        shapes.append(Shape("rect", x_of(t), mt, ml + pw, mt + ph, color="#eef5ee", cls="kept-side"))
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c:
            y = mt + ph - int(ph * c / top)
            shapes.append(Shape("rect", x_of(a), y, max(x_of(b) - 1, x_of(a)), mt + ph, color="#3b6fb6", cls="bar"))
    shapes += [Shape("line", ml, mt + ph, ml + pw, mt + ph, cls="axis"), Shape("line", ml, mt, ml, mt + ph, cls="axis")]
    for v in np.linspace(lo + pad, hi - pad, 5):
        shapes.append(Shape("line", x_of(v), mt + ph, x_of(v), mt + ph + 4, cls="tick"))
        shapes.append(Shape("text", x_of(v) - 14, mt + ph + 8, text=_fmt(float(v)), cls="tick-label"))
    shapes.append(Shape("text", ml - 4, mt - 6, text=f"{top:,}", anchor="end", cls="count-label"))
    for i, t in enumerate(thr):
        x, y = x_of(t), TITLE_ROW + LABEL_ROW * i
        right = x <= ml + pw / 2
        shapes.append(Shape("line", x, y + LABEL_ROW // 2, x, mt + ph, color="#d62728", width=2, cls="threshold-line"))
        shapes.append(Shape("text", x + 5 if right else x - 5, y, text=f"threshold {t:.4g}", color="#d62728",
                            anchor="start" if right else "end", cls="threshold-label"))
    return Plot(w, h, shapes)


def plot_png(plot: Plot) -> bytes:
    """The plot drawn with Pillow."""
    img = Image.new("RGB", (plot.width, plot.height), "white")
    d = ImageDraw.Draw(img)
    for s in plot.shapes:
        if s.kind == "rect":
            d.rectangle([s.x0, s.y0, s.x1, s.y1], fill=s.color)
        elif s.kind == "line":
            d.line([s.x0, s.y0, s.x1, s.y1], fill=s.color, width=s.width)
        else:
            font = _font(s.size)
            x = s.x0 - d.textlength(s.text, font=font) if s.anchor == "end" else s.x0
            d.text((x, s.y0), s.text, fill=s.color, font=font)
    return _png(img)


def plot_svg(plot: Plot, plot_id: str, label: str) -> str:
    """The same plot as inline SVG: each shape an element with its class, so a browser can measure them."""
    out = []
    for i, s in enumerate(plot.shapes):
        cls = f" class='{s.cls}'" if s.cls else ""
        if s.kind == "rect":
            out.append(f"<rect{cls} x='{s.x0}' y='{s.y0}' width='{s.x1 - s.x0 + 1}' height='{s.y1 - s.y0 + 1}' "
                       f"fill='{s.color}'/>")
        elif s.kind == "line":
            out.append(f"<line{cls} x1='{s.x0}' y1='{s.y0}' x2='{s.x1}' y2='{s.y1}' stroke='{s.color}' "
                       f"stroke-width='{s.width}'/>")
        else:
            ident = f" id='{plot_id}-{s.cls}-{i}'" if s.cls == "threshold-label" else ""
            out.append(f"<text{cls}{ident} x='{s.x0}' y='{s.y0}' font-size='{s.size}' fill='{s.color}' "
                       f"text-anchor='{s.anchor}' dominant-baseline='text-before-edge'>{_e(s.text)}</text>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' class='plot' id='{plot_id}' role='img' aria-label='{_e(label)}' "
            f"width='{plot.width}' height='{plot.height}' viewBox='0 0 {plot.width} {plot.height}' "
            f"font-family='system-ui,sans-serif'><rect width='100%' height='100%' fill='white'/>{''.join(out)}</svg>")


def histogram_png(values: np.ndarray, threshold: list[float], title: str, bins: int = 60) -> bytes:
    """histogram_layout drawn as PNG."""
    return plot_png(histogram_layout(values, threshold, title, bins))


# --------------------------------------------------------------------------------------------------------
# Example images from the pool's shards
# --------------------------------------------------------------------------------------------------------


def fetch_thumbnails(pool, uids: set[str], size: int = THUMB) -> dict[str, str]:
    """uid -> JPEG data URI of a thumbnail, for the uids found in the pool's shards (none for a metadata-only pool)."""
    import pyarrow.parquet as pq

    from curate.wds import ReadReport, iter_samples

    out: dict[str, str] = {}
    if not uids or pool is None or not pool.has_shards():
        return out
    wanted = {u.lower() for u in uids}
    for shard in pool.shards():
        if not wanted - set(out):
            break
        keys: dict[str, str] = {}
        if shard.parquet:
            try:
                t = pq.ParquetFile(storage.arrow_source(shard.parquet)).read(columns=["uid", "key"])
                for uid, key in zip(t.column("uid").to_pylist(), t.column("key").to_pylist()):
                    if uid and key and uid.lower() in wanted and uid.lower() not in out:
                        keys[str(key)] = uid.lower()
            except Exception:
                keys = {}
            if not keys:
                continue
        for sample in iter_samples(shard.tar, ReadReport()):
            uid = keys.get(sample.key.rsplit("/", 1)[-1]) if keys else _json_uid(sample)
            if uid is None or uid not in wanted or uid in out:
                continue
            data = next((sample.files[e] for e in IMAGE_EXTS if e in sample.files), None)
            if data is None:
                continue
            uri = _thumbnail_uri(data, size)
            if uri:
                out[uid] = uri
            if keys and all(u in out for u in keys.values()):
                break
    return out


def _json_uid(sample) -> str | None:
    try:
        return str(json.loads(sample.files["json"])["uid"]).lower()
    except (KeyError, ValueError, TypeError):
        return None


def _thumbnail_uri(data: bytes, size: int) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > PIXELS_ONLY.max_pixels:  # bounded on the header, never decoded
                return None
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except Exception:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --------------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------------

def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _safe_name(column: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", column)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def _funnel_rows(steps: list[dict]) -> str:
    rows = []

    def part_rows(parts, depth):
        for p in parts:
            pct = 100.0 * p["kept"] / p["rows_in"] if p["rows_in"] else 0.0
            rows.append(f"<tr class=part><td>{'&nbsp;' * 4 * depth}↳ {_e(p['filter'])}</td><td>{p['rows_in']:,}</td>"
                        f"<td>{p['kept']:,}</td><td>{p['rows_in'] - p['kept']:,}</td><td>{pct:.1f}%</td><td></td></tr>")
            part_rows(p.get("parts", []), depth + 1)

    for s in steps:
        pct = 100.0 * s["kept"] / s["rows_in"] if s["rows_in"] else 0.0
        reasons = ", ".join(f"{_e(k)}: {v:,}" for k, v in s["rejected_by_first_rule"].items())
        rows.append(f"<tr><td>{_e(s.get('label', s['filter']))}</td><td>{s['rows_in']:,}</td><td>{s['kept']:,}</td>"
                    f"<td>{s['rejected']:,}</td><td>{pct:.1f}%</td><td style='text-align:left'>{reasons}</td></tr>")
        part_rows(s.get("parts", []), 1)
    return "\n".join(rows)


#: the example value that marks a row `curate dedup` did not keep: dedup_<method>_keep = False
DEDUP_KEEP = re.compile(r"^dedup_([a-z0-9]+)_keep$")


def _dedup_method(item: dict) -> str | None:
    """The dedup method under which this example is a duplicate that was not kept, if any."""
    return next((m.group(1) for k, v in item.get("values", {}).items() if v is False and (m := DEDUP_KEEP.match(k))), None)


def kept_copies_of(pool, examples: list[dict]) -> dict[str, str | None]:
    """rejected duplicate's uid (lower case) -> the uid its dedup group kept, from POOL/columns/dedup_<method>/."""
    by_method: dict[str, set[str]] = {}
    for st in examples:
        for e in st["rejected"]:
            if e.get("uid") and (method := _dedup_method(e)):
                by_method.setdefault(method, set()).add(e["uid"])
    out: dict[str, str | None] = {}
    for method, uids in by_method.items():
        if pool is not None:
            from curate.dedup.kept import kept_copies  # here: it imports pyarrow.dataset, and with it pandas (0.4 s)

            out.update({u.lower(): k for u, k in kept_copies(pool.root, method, sorted(uids)).items()})
    return out


def _image(uid: str | None, thumbs: dict[str, str]) -> str:
    uri = thumbs.get((uid or "").lower())
    return f"<img src='{uri}' alt='{_e(uid)}'>" if uri else "<div class=noimg>(no image in the pool)</div>"


def _card(item: dict, kind: str, thumbs: dict[str, str], kept_copy: dict[str, str | None]) -> str:
    uid = item["uid"]
    img = _image(uid, thumbs)
    dup = ""
    if kind == "rejected" and _dedup_method(item):
        keeper = kept_copy.get((uid or "").lower())
        if keeper:  # the rejected copy and the one its group kept, side by side
            img = (f"<div class=pair><figure>{img}<figcaption>this copy (rejected)</figcaption></figure>"
                   f"<figure class=kept-copy data-uid='{_e(keeper)}'>{_image(keeper, thumbs)}"
                   f"<figcaption>kept copy</figcaption></figure></div>")
            dup = f"<div class=dup>duplicate of <code>{_e(keeper)}</code>, the copy its group kept</div>"
        else:
            dup = "<div class=dup>duplicate; its group's kept copy is not in the dedup columns</div>"
    text = item.get("text")
    cap = _e(text if len(text or "") <= 200 else text[:199] + "…") if text is not None else "<span class=noimg>(no caption)</span>"
    vals = "<br>".join(f"{_e(k)} = {_e(_fmt(v) if isinstance(v, float) else v)}" for k, v in item["values"].items())
    reason = f"<div class=reason>{_e(item['reason'])}</div>" if item.get("reason") else ""
    return (f"<div class='card {kind}' data-uid='{_e(uid)}'>{img}<div class=cap>{cap}</div>"
            f"<div class=vals>{vals}</div>{reason}{dup}</div>")


def write_report(output: Path, stats: dict, filters: list, scores: dict, examples: list[dict], pool) -> dict:
    """Write OUT/report.html and the PNG plots; return what was written (file names in OUT, for stats.json).

    Histograms are inline SVG in the page (each bar and threshold label an element a browser can measure)
    and the same drawing as PNG beside it."""
    output = storage.path(output)
    written = {"html": "report.html", "png": []}
    steps = stats["steps"]
    funnel = funnel_png(steps)
    _write_bytes(output / "funnel.png", funnel)
    written["png"].append("funnel.png")

    thresholds: dict[str, list[float]] = {}
    owners: dict[str, list[str]] = {}
    for f in filters:
        for col, thr in f.score_thresholds():
            thresholds.setdefault(col, []).append(thr)
            owners.setdefault(col, []).append(f.label())
    hist_html = []
    for col, s in scores.items():
        sample = np.asarray(s.get("sample", np.zeros(0)), dtype=np.float64)
        thr = sorted({t for t in thresholds.get(col, []) if t is not None})
        plot = histogram_layout(sample, thr, f"{col} ({len(sample):,} of {s['rows'] - s['missing']:,} values)")
        name = f"hist_{_safe_name(col)}.png"
        _write_bytes(output / name, plot_png(plot))
        written["png"].append(name)
        rng = f"{s['min']:.4g} .. {s['max']:.4g}" if s["min"] is not None else "no values"
        hist_html.append(
            f"<div><h3>{_e(col)}</h3><p>threshold {', '.join(f'{t:.6g}' for t in thr) or '-'} "
            f"({_e(', '.join(owners.get(col, [])))}); observed range {rng}; missing {s['missing']:,} of {s['rows']:,}; "
            f"histogram of a uniform sample of {len(sample):,}; shaded: kept side (also as <code>{_e(name)}</code>)</p>"
            f"{plot_svg(plot, f'hist-{_safe_name(col)}', f'histogram of {col}')}</div>")

    kept_copy = kept_copies_of(pool, examples)
    wanted = {e["uid"] for st in examples for kind in ("kept", "rejected") for e in st[kind] if e.get("uid")}
    thumbs = fetch_thumbnails(pool, wanted | {k for k in kept_copy.values() if k})
    grid_html = []
    for f, st in zip(filters, examples):
        grid_html.append(f"<h3>{_e(f.label())}</h3>")
        for kind in ("kept", "rejected"):
            cards = "".join(_card(e, kind, thumbs, kept_copy) for e in st[kind]) or "<p class=noimg>(none)</p>"
            grid_html.append(f"<h4>{kind}</h4><div class=grid>{cards}</div>")

    warn = "".join(f"<div class=warn>⚠ {_e(w)}</div>" for w in stats.get("warnings", []))
    recipe = stats.get("recipe")
    recipe_html = f"<p>recipe: <code>{_e(recipe.get('path'))}</code> {_e(recipe.get('description') or '')}</p>" if recipe else ""
    params = "".join(f"<li><b>{_e(f['name'])}</b> <code>{_e(json.dumps({k: v for k, v in f.items() if k != 'name'}, default=str))}</code></li>"
                     for f in stats["filters"])
    thr_rows = "".join(f"<li>{_e(t['column'])}: top {t['fraction']:.0%} → threshold {t['threshold']:.6g} "
                       f"(rank {t['rank']:,} of {t['pool_rows']:,})</li>" for t in stats.get("thresholds", []))
    n_img = len(thumbs)
    body = f"""<h1>curate run: {stats['kept']:,} of {stats['rows_in']:,} rows kept ({100.0 * stats['kept'] / max(stats['rows_in'], 1):.2f}%)</h1>
<p>pool <code>{_e(stats['pool'])}</code>, {stats['partitions']} partitions, engine {_e(stats['engine'])};
subset <code>{_e(stats['subset_file'])}</code> (sha256 {_e(stats['subset_sha256'][:16])}…)</p>
{recipe_html}{warn}
<h2>Filters</h2><ul>{params}</ul>{f'<p>pool-wide thresholds:</p><ul>{thr_rows}</ul>' if thr_rows else ''}
<h2>Funnel</h2>
<div class=scroll><table><tr><th>step</th><th>rows in</th><th>kept</th><th>rejected</th><th>kept %</th><th>rejected by (first rule)</th></tr>
{_funnel_rows(steps)}</table></div>
<div class=plots><img alt="funnel" src="{_png_uri(funnel)}"></div>
<h2>Scores</h2>{''.join(hist_html) or '<p>No thresholded scores in these filters.</p>'}
<h2>Examples</h2>
<p>Chosen by uid hash among the rows each step saw; {'images are thumbnails from the pool shards' if n_img else 'the pool has no images for them (metadata only): captions and values only'}.
A rejected duplicate shows the copy its dedup group kept beside it.</p>
{''.join(grid_html)}"""
    with atomic_open(output / "report.html", "w") as f:
        f.write(html_page("curate run report", body))
    written["images"] = n_img
    return written
