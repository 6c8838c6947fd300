"""The look of every HTML page the project writes (`curate run`'s OUT/report.html, `evaluate leaderboard
--format html`): one stylesheet and one page skeleton, so the pages read alike and a style fix lands in all.

A page is self-contained (styles and script inline, images as data URIs) so it opens anywhere with no other
file. A small script marks `<body data-images-ok=N data-images-broken=M>` once the page has loaded, so a
headless browser can tell that every image decoded.
"""

from __future__ import annotations

import html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
code{overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.warn{background:#fff4e5;border:1px solid #f0a020;padding:8px 12px}
.scroll{max-width:100%;overflow-x:auto}td.text,th.text{text-align:left;overflow-wrap:anywhere}
tr.reference td{color:#666;background:#f7f7f7}.note{color:#555;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:10px}
.card{border:1px solid #ccc;border-radius:6px;padding:6px;font-size:12px;overflow:hidden}
.card.kept{border-color:#5a9e5a}.card.rejected{border-color:#c0504d}
.card img{display:block;width:100%;height:auto;margin-bottom:4px;image-rendering:auto}
.pair{display:flex;gap:4px}.pair figure{margin:0;flex:1 1 0;min-width:0}
.pair figcaption{font-size:10px;color:#555;overflow-wrap:anywhere}
.cap{font-style:italic;word-break:break-word}.noimg{color:#888;font-size:11px}.reason{color:#c0504d}
.vals{color:#555;font-family:monospace;font-size:11px;overflow-wrap:anywhere}.plots img,svg.plot{max-width:100%;height:auto}
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


def esc(v) -> str:
    """Text or an attribute value, escaped for HTML (quotes included)."""
    return html.escape(str(v), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document: the shared head (title, stylesheet, load script) around `body`."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style><script>{SCRIPT}</script></head>
<body>
{body}
</body></html>
"""
