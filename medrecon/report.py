"""A one-file HTML report of a run: the figure, the per-plane metrics table, the settings and the
provenance. Self-contained (the PNG is embedded), so it can be mailed or put on a web page.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from medrecon.metrics import PLANES

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #555; font-size: 0.9em; }
"""


def _num(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def metrics_table_html(rows: Mapping[str, Mapping[str, Any]], seconds: Optional[Mapping[str, float]] = None) -> str:
    """An HTML table of :func:`medrecon.metrics.score` results keyed by method: PSNR/SSIM over
    the volume and per plane (and seconds when given)."""
    head = ["method", "PSNR (dB)", "SSIM"] + [f"{p} PSNR / SSIM" for p in PLANES]
    if seconds:
        head.append("seconds")
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for name, m in rows.items():
        cells = [html.escape(name), _num(m.get("psnr"), 2), _num(m.get("ssim"), 3)]
        cells += [f"{_num(m['planes'][p]['psnr'], 2)} / {_num(m['planes'][p]['ssim'], 3)}" for p in PLANES]
        if seconds:
            cells.append(_num(seconds.get(name), 1))
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def html_report(title: str, metrics: Optional[Mapping[str, Mapping[str, Any]]], settings: Mapping[str, Any],
                provenance: Mapping[str, Any], figure_png: Optional[bytes] = None,
                seconds: Optional[Mapping[str, float]] = None, notes: Sequence[str] = ()) -> str:
    """The report as an HTML string."""
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for note in notes:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    if figure_png is not None:
        data = base64.b64encode(figure_png).decode("ascii")
        parts += ["<h2>Figure</h2>", f"<img alt='tri-planar comparison' src='data:image/png;base64,{data}'>"]
    if metrics:
        parts += ["<h2>Metrics</h2>", metrics_table_html(metrics, seconds)]
        first = next(iter(metrics.values()))
        conv = (first.get("convention") or {}).get("description")
        if conv:
            parts.append(f"<p class='note'>Convention: {html.escape(conv)}. Per plane: the mean over the slices "
                         f"of that plane (slices where the reference is constant, or with a mask the slices it "
                         f"barely covers, are left out).</p>")
        mask = first.get("mask")
        if mask:
            parts.append(f"<p class='note'>Body mask: {mask['voxels']} voxels ({100 * mask['fraction']:.1f} % "
                         f"of the volume).</p>")
    parts += ["<h2>Settings</h2>", f"<pre>{html.escape(json.dumps(settings, indent=2, default=str))}</pre>",
              "<h2>Provenance</h2>", _provenance_table(provenance), "</body></html>"]
    return "\n".join(parts) + "\n"


def _provenance_table(block: Mapping[str, Any]) -> str:
    rows = []
    for key, value in block.items():
        text = value if isinstance(value, str) else json.dumps(value, indent=1, default=str)
        rows.append(f"<tr><td>{html.escape(key)}</td><td style='text-align:left'><code>"
                    f"{html.escape(str(text))}</code></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def write_html_report(path: str | os.PathLike, overwrite: bool = False, **kwargs: Any) -> Path:
    """:func:`html_report` written atomically to ``path``."""
    from medrecon.io.atomic import write_text_atomic

    return write_text_atomic(path, html_report(**kwargs), overwrite=overwrite, what="HTML report")


def figure_png_bytes(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return buf.getvalue()


__all__ = ["html_report", "write_html_report", "metrics_table_html", "figure_png_bytes"]
