"""OUT/report.html: one self-contained page showing what a `curate run` kept and threw away.

- the funnel: rows into and out of each step (a table and a bar chart), with the parts of and/or/not steps;
- each thresholded score's histogram (from a uniform uid-hash sample of the pool) with its threshold;
- for each step, a grid of kept and rejected examples (chosen by uid hash, so the same on every engine)
  with caption, the step's values and the rule that rejected it; images come from the pool's shards when
  it has them (thumbnails), else the cards show captions only.

Every image and plot is embedded as a data URI, so the page opens anywhere with no other file; the plots
are also written beside it as PNG (funnel.png, hist_<column>.png). Plots are drawn with Pillow. A small
script marks `<body data-images-ok=N data-images-broken=M>` once the page has loaded, so a headless browser
can tell that every image decoded.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from curate.atomic import atomic_open
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


def histogram_png(values: np.ndarray, threshold: list[float], title: str, bins: int = 60) -> bytes:
    """A histogram of `values` with a red line at each threshold (kept side shaded)."""
    font, small = _font(14), _font(12)
    w, h, ml, mr, mt, mb = 640, 320, 60, 20, 40, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), title, fill="black", font=font)
    values = values[np.isfinite(values)]
    thr = [t for t in threshold if t is not None and np.isfinite(t)]
    if len(values) == 0:
        d.text((ml, h // 2), "no values", fill="black", font=font)
        return _png(img)
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
        d.rectangle([x_of(t), mt, ml + pw, mt + ph], fill="#eef5ee")
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c:
            y = mt + ph - int(ph * c / top)
            d.rectangle([x_of(a), y, max(x_of(b) - 1, x_of(a)), mt + ph], fill="#3b6fb6")
    d.line([ml, mt + ph, ml + pw, mt + ph], fill="black")
    d.line([ml, mt, ml, mt + ph], fill="black")
    for v in np.linspace(lo + pad, hi - pad, 5):
        d.line([x_of(v), mt + ph, x_of(v), mt + ph + 4], fill="black")
        d.text((x_of(v) - 14, mt + ph + 8), _fmt(float(v)), fill="black", font=small)
    d.text((4, mt - 4), f"{top:,}", fill="black", font=small)
    for t in thr:
        d.line([x_of(t), mt, x_of(t), mt + ph], fill="#d62728", width=2)
        d.text((x_of(t) + 4, mt + 2), f"threshold {t:.4g}", fill="#d62728", font=small)
    return _png(img)


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
                t = pq.read_table(shard.parquet, columns=["uid", "key"])
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

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.warn{background:#fff4e5;border:1px solid #f0a020;padding:8px 12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:10px}
.card{border:1px solid #ccc;border-radius:6px;padding:6px;font-size:12px;overflow:hidden}
.card.kept{border-color:#5a9e5a}.card.rejected{border-color:#c0504d}
.card img{display:block;width:100%;height:auto;margin-bottom:4px;image-rendering:auto}
.cap{font-style:italic;word-break:break-word}.noimg{color:#888;font-size:11px}.reason{color:#c0504d}
.vals{color:#555;font-family:monospace;font-size:11px}.plots img{max-width:100%}
.part{color:#555}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var ok = 0, broken = 0;
  document.querySelectorAll('img').forEach(function (im) {
    if (im.complete && im.naturalWidth > 0) { ok++; } else { broken++; }
  });
  document.body.setAttribute('data-images-ok', ok);
  document.body.setAttribute('data-images-broken', broken);
});
"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


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


def _card(item: dict, kind: str, thumbs: dict[str, str]) -> str:
    uri = thumbs.get((item["uid"] or "").lower())
    img = f"<img src='{uri}' alt='{_e(item['uid'])}'>" if uri else "<div class=noimg>(no image in the pool)</div>"
    text = item.get("text")
    cap = _e(text if len(text or "") <= 200 else text[:199] + "…") if text is not None else "<span class=noimg>(no caption)</span>"
    vals = "<br>".join(f"{_e(k)} = {_e(_fmt(v) if isinstance(v, float) else v)}" for k, v in item["values"].items())
    reason = f"<div class=reason>{_e(item['reason'])}</div>" if item.get("reason") else ""
    return (f"<div class='card {kind}' data-uid='{_e(item['uid'])}'>{img}<div class=cap>{cap}</div>"
            f"<div class=vals>{vals}</div>{reason}</div>")


def write_report(output: Path, stats: dict, filters: list, scores: dict, examples: list[dict], pool) -> dict:
    """Write OUT/report.html and the PNG plots; return what was written (file names in OUT, for stats.json)."""
    output = Path(output)
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
        thr = sorted(set(t for t in thresholds.get(col, []) if t is not None))
        png = histogram_png(sample, thr, f"{col} ({len(sample):,} of {s['rows'] - s['missing']:,} values)")
        name = f"hist_{_safe_name(col)}.png"
        _write_bytes(output / name, png)
        written["png"].append(name)
        rng = f"{s['min']:.4g} .. {s['max']:.4g}" if s["min"] is not None else "no values"
        hist_html.append(
            f"<div><h3>{_e(col)}</h3><p>threshold {', '.join(f'{t:.6g}' for t in thr) or '-'} "
            f"({_e(', '.join(owners.get(col, [])))}); observed range {rng}; missing {s['missing']:,} of {s['rows']:,}; "
            f"histogram of a uniform sample of {len(sample):,}; shaded: kept side</p>"
            f"<img alt='histogram of {_e(col)}' src='{_png_uri(png)}'></div>")

    wanted = {e["uid"] for st in examples for kind in ("kept", "rejected") for e in st[kind] if e.get("uid")}
    thumbs = fetch_thumbnails(pool, wanted)
    grid_html = []
    for f, st in zip(filters, examples):
        grid_html.append(f"<h3>{_e(f.label())}</h3>")
        for kind in ("kept", "rejected"):
            cards = "".join(_card(e, kind, thumbs) for e in st[kind]) or "<p class=noimg>(none)</p>"
            grid_html.append(f"<h4>{kind}</h4><div class=grid>{cards}</div>")

    warn = "".join(f"<div class=warn>⚠ {_e(w)}</div>" for w in stats.get("warnings", []))
    recipe = stats.get("recipe")
    recipe_html = f"<p>recipe: <code>{_e(recipe.get('path'))}</code> {_e(recipe.get('description') or '')}</p>" if recipe else ""
    params = "".join(f"<li><b>{_e(f['name'])}</b> <code>{_e(json.dumps({k: v for k, v in f.items() if k != 'name'}, default=str))}</code></li>"
                     for f in stats["filters"])
    thr_rows = "".join(f"<li>{_e(t['column'])}: top {t['fraction']:.0%} → threshold {t['threshold']:.6g} "
                       f"(rank {t['rank']:,} of {t['pool_rows']:,})</li>" for t in stats.get("thresholds", []))
    n_img = len(thumbs)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>curate run report</title>
<style>{CSS}</style><script>{SCRIPT}</script></head>
<body>
<h1>curate run: {stats['kept']:,} of {stats['rows_in']:,} rows kept ({100.0 * stats['kept'] / max(stats['rows_in'], 1):.2f}%)</h1>
<p>pool <code>{_e(stats['pool'])}</code>, {stats['partitions']} partitions, engine {_e(stats['engine'])};
subset <code>{_e(stats['subset_file'])}</code> (sha256 {_e(stats['subset_sha256'][:16])}…)</p>
{recipe_html}{warn}
<h2>Filters</h2><ul>{params}</ul>{f'<p>pool-wide thresholds:</p><ul>{thr_rows}</ul>' if thr_rows else ''}
<h2>Funnel</h2>
<table><tr><th>step</th><th>rows in</th><th>kept</th><th>rejected</th><th>kept %</th><th>rejected by (first rule)</th></tr>
{_funnel_rows(steps)}</table>
<div class=plots><img alt="funnel" src="{_png_uri(funnel)}"></div>
<h2>Scores</h2>{''.join(hist_html) or '<p>No thresholded scores in these filters.</p>'}
<h2>Examples</h2>
<p>Chosen by uid hash among the rows each step saw; {'images are thumbnails from the pool shards' if n_img else 'the pool has no images for them (metadata only): captions and values only'}.</p>
{''.join(grid_html)}
</body></html>
"""
    with atomic_open(output / "report.html", "w") as f:
        f.write(page)
    written["images"] = n_img
    return written
