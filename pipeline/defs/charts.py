"""Small SVG charts embedded in markdown metadata, for what a user would rather look at than read.

Drawn here (no plotting library, nothing fetched): the UI shows ``MetadataValue.md`` images given as
data URIs.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

import dagster as dg

WIDTH, HEIGHT, MARGIN = 420, 240, 40


def _svg(body: str, title: str, x_label: str, y_label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'font-family="sans-serif" font-size="11">'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>'
            f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - 10}" y2="{HEIGHT - MARGIN}" stroke="black"/>'
            f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{MARGIN}" y2="26" stroke="black"/>'
            f'<text x="{WIDTH / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(x_label)}</text>'
            f'<text x="12" y="{HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 12 {HEIGHT / 2})">'
            f'{escape(y_label)}</text>{body}</svg>')


def _x(fraction: float) -> float:
    return MARGIN + fraction * (WIDTH - 10 - MARGIN)


def _y(fraction: float) -> float:
    return HEIGHT - MARGIN - fraction * (HEIGHT - MARGIN - 26)


def calibration_svg(calibration: Sequence[dict]) -> str:
    """Observed click rate against mean predicted probability per bin (the evaluation's calibration
    rows), with the diagonal."""
    points = [(r["mean_predicted"], r["observed_rate"]) for r in calibration
              if r["rows"] and math.isfinite(r["mean_predicted"])]
    top = min(1.0, max([0.05, *(max(p, o) for p, o in points)]) * 1.1)
    body = (f'<line x1="{_x(0)}" y1="{_y(0)}" x2="{_x(1)}" y2="{_y(1)}" stroke="#bbb" stroke-dasharray="4"/>'
            + "".join(f'<circle cx="{_x(p / top):.1f}" cy="{_y(o / top):.1f}" r="4" fill="#4f43dd"/>'
                      for p, o in points)
            + f'<text x="{_x(1) - 2}" y="{_y(0) + 12}" text-anchor="end">{top:.3f}</text>'
            + f'<text x="{MARGIN - 4}" y="{_y(1) + 4}" text-anchor="end">{top:.2f}</text>')
    return _svg(body, "Calibration (held-out)", "mean predicted probability", "observed click rate")


def histogram_svg(values_ms: Sequence[float], marks: dict[str, float], title: str, bins: int = 30) -> str:
    """A histogram of latencies in milliseconds, with ``marks`` (name → ms, e.g. p50 and p95) drawn on it."""
    values = sorted(v for v in values_ms if math.isfinite(v))
    if not values:
        return _svg("", title, "milliseconds", "requests")
    high = values[min(len(values) - 1, int(0.995 * len(values)))] or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(v / high * bins))] += 1
    tallest = max(counts) or 1
    bar = (WIDTH - 10 - MARGIN) / bins
    body = "".join(f'<rect x="{_x(i / bins):.1f}" y="{_y(c / tallest):.1f}" width="{bar - 1:.1f}" '
                   f'height="{_y(0) - _y(c / tallest):.1f}" fill="#4f43dd"/>' for i, c in enumerate(counts))
    for name, v in marks.items():
        x = _x(min(v / high, 1.0))
        body += (f'<line x1="{x:.1f}" y1="{_y(0)}" x2="{x:.1f}" y2="{_y(1)}" stroke="#d33"/>'
                 f'<text x="{x + 3:.1f}" y="{_y(1) + 10}" fill="#d33">{name} {v:.1f}</text>')
    body += f'<text x="{_x(1)}" y="{_y(0) + 12}" text-anchor="end">{high:.1f}</text>'
    return _svg(body, title, f"milliseconds ({len(values)} requests; top 0.5% clipped)", "requests")


def picture(svg: str, alt: str) -> dg.MetadataValue:
    """Markdown metadata showing ``svg`` as an image."""
    encoded = base64.b64encode(svg.encode()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/svg+xml;base64,{encoded})")


COLOURS = ("#4f43dd", "#d33", "#1a8f3c", "#c77c00", "#777")


def ctr_by_rank_svg(rates: dict[str, list[float]]) -> str:
    """Click rate at each rank, one line per model version (position bias and ranking quality)."""
    ranks = max((len(r) for r in rates.values()), default=0)
    finite = [v for r in rates.values() for v in r if math.isfinite(v)]
    top = max([0.05, *finite]) * 1.1
    body = ""
    for n, (version, values) in enumerate(rates.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = [(_x(i / max(ranks - 1, 1)), _y(v / top)) for i, v in enumerate(values) if math.isfinite(v)]
        body += (f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                 + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>'
                 + "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points)
                 + f'<text x="{_x(1) - 2}" y="{40 + 13 * n}" text-anchor="end" fill="{colour}">'
                 f'{escape(version[:28])}</text>')
    body += (f'<text x="{MARGIN - 4}" y="{_y(1) + 4}" text-anchor="end">{top:.2f}</text>'
             f'<text x="{_x(0)}" y="{_y(0) + 12}" text-anchor="middle">1</text>'
             f'<text x="{_x(1)}" y="{_y(0) + 12}" text-anchor="middle">{ranks}</text>')
    return _svg(body, "Click rate by rank", "rank", "click rate")


def bars_svg(values: Sequence[tuple[str, float]], lines: dict[str, float], title: str, x_label: str) -> str:
    """Horizontal bars (label, value), largest first, with vertical ``lines`` (name → value)."""
    top = max([*(v for _, v in values), *lines.values(), 1e-9]) * 1.1
    row = (HEIGHT - MARGIN - 30) / max(len(values), 1)
    left = MARGIN + 70
    span = WIDTH - 10 - left
    body = "".join(f'<rect x="{left}" y="{28 + i * row:.1f}" width="{span * v / top:.1f}" height="{row - 3:.1f}" '
                   f'fill="{COLOURS[1] if v > lines.get("block", top) else COLOURS[0]}"/>'
                   f'<text x="{left - 4}" y="{28 + i * row + row / 2 + 3:.1f}" text-anchor="end">{escape(name)}</text>'
                   f'<text x="{left + span * v / top + 3:.1f}" y="{28 + i * row + row / 2 + 3:.1f}">{v:.3f}</text>'
                   for i, (name, v) in enumerate(values))
    for n, (name, v) in enumerate(lines.items()):
        x = left + span * v / top
        body += (f'<line x1="{x:.1f}" y1="26" x2="{x:.1f}" y2="{HEIGHT - MARGIN}" stroke="{COLOURS[2 + n]}" '
                 f'stroke-dasharray="4"/><text x="{x + 2:.1f}" y="{HEIGHT - MARGIN - 4}" fill="{COLOURS[2 + n]}">'
                 f'{escape(name)} {v:g}</text>')
    return _svg(body, title, x_label, "")


def shares_svg(reference: Sequence[float], current: Sequence[float], title: str) -> str:
    """Two distributions over the same bins (the reference's deciles): reference and current."""
    bins = len(reference)
    top = max([*reference, *current, 1e-9]) * 1.1
    width = (WIDTH - 10 - MARGIN) / max(bins, 1)
    body = ""
    for i, (r, c) in enumerate(zip(reference, current, strict=True)):
        body += (f'<rect x="{_x(i / bins):.1f}" y="{_y(r / top):.1f}" width="{width / 2 - 1:.1f}" '
                 f'height="{_y(0) - _y(r / top):.1f}" fill="{COLOURS[4]}"/>'
                 f'<rect x="{_x(i / bins) + width / 2:.1f}" y="{_y(c / top):.1f}" width="{width / 2 - 1:.1f}" '
                 f'height="{_y(0) - _y(c / top):.1f}" fill="{COLOURS[0]}"/>')
    body += (f'<text x="{_x(1) - 2}" y="40" text-anchor="end" fill="{COLOURS[4]}">reference</text>'
             f'<text x="{_x(1) - 2}" y="53" text-anchor="end" fill="{COLOURS[0]}">current</text>')
    return _svg(body, title, "bins at the reference's deciles", "share")
