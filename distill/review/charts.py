"""Small inline SVG charts (no JavaScript, no image files): bars, a calibration curve, a scatter."""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

INK, MUTED, ACCENT, WARN, GOOD = "#1f2937", "#6b7280", "#2563eb", "#d97706", "#059669"
FONT = 'font-family="system-ui, sans-serif"'


def bars(items: list[tuple[str, int, bool, str]], width: int = 260, row: int = 20) -> Markup:
    """Horizontal bars: (label, value, flagged, link); flagged bars are orange (too few examples)."""
    label_w, value_w = 100, 36
    span = width - label_w - value_w
    top = max((v for _, v, _, _ in items), default=0) or 1
    height = row * len(items) + 4
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="records per skill" {FONT} font-size="12">']
    for i, (label, value, flagged, link) in enumerate(items):
        y = i * row + 2
        length = max(1.0, span * value / top) if value else 0
        colour = WARN if flagged else ACCENT
        parts.append(f'<a href="{escape(link)}"><text x="{label_w - 6}" y="{y + row * 0.7:.1f}" text-anchor="end" '
                     f'fill="{INK}">{escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" rx="2" '
                     f'fill="{colour}"><title>{escape(label)}: {value}</title></rect></a>'
                     f'<text x="{label_w + length + 4:.1f}" y="{y + row * 0.7:.1f}" fill="{MUTED}">{value}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _axes(parts: list[str], x0: float, y0: float, x1: float, y1: float, xlabel: str, ylabel: str,
          xticks: list[tuple[float, str]], yticks: list[tuple[float, str]]) -> None:
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="{MUTED}"/>'
                 f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="{MUTED}"/>')
    for x, text in xticks:
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="{MUTED}"/>'
                     f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle" fill="{MUTED}">{escape(text)}</text>')
    for y, text in yticks:
        parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{escape(text)}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + 32}" text-anchor="middle" fill="{INK}">{escape(xlabel)}'
                 f'</text><text x="14" y="{(y0 + y1) / 2:.1f}" text-anchor="middle" fill="{INK}" '
                 f'transform="rotate(-90 14 {(y0 + y1) / 2:.1f})">{escape(ylabel)}</text>')


def calibration_curve(curve: list[dict], threshold: float | None, target: float | None,
                      width: int = 560, height: int = 250) -> Markup:
    """Precision and coverage against the confidence threshold (a step each), the chosen threshold dashed.
    The x axis starts a little below the lowest confidence seen (the rest of [0, 1] says nothing)."""
    points = sorted((p for p in curve if isinstance(p, dict) and "threshold" in p), key=lambda p: p["threshold"])
    if not points:
        return Markup('<p class="muted">no calibration curve</p>')
    x0, y0, x1, y1 = 50, height - 44, width - 12, 12
    low = max(0.0, math.floor((min(p["threshold"] for p in points) - 0.05) * 10) / 10)

    def sx(t: float) -> float:
        return x0 + (x1 - x0) * (t - low) / ((1.0 - low) or 1)

    def sy(v: float) -> float:
        return y0 - (y0 - y1) * v

    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="calibration curve" {FONT} font-size="11">']
    ticks = [low + (1 - low) * i / 5 for i in range(6)]
    _axes(parts, x0, y0, x1, y1, "confidence threshold", "rate", [(sx(t), f"{t:.1f}") for t in ticks],
          [(sy(v), f"{v:.1f}") for v in (0, 0.25, 0.5, 0.75, 1.0)])
    for key, colour in (("precision", ACCENT), ("coverage", GOOD)):
        # matplotlib's step "pre": a threshold in (c_i-1, c_i] acts like c_i, so the value rises to c_i first
        first = points[0]
        path = [f"M{sx(first['threshold']):.1f},{sy(float(first[key])):.1f}"]
        for before, p in zip(points, points[1:]):
            y = sy(float(p[key]))
            path.append(f"L{sx(before['threshold']):.1f},{y:.1f} L{sx(p['threshold']):.1f},{y:.1f}")
        parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"/>')
    if target is not None:
        parts.append(f'<line x1="{x0}" y1="{sy(target):.1f}" x2="{x1}" y2="{sy(target):.1f}" stroke="{MUTED}" '
                     f'stroke-dasharray="2 3"/>')
    if threshold is not None and low <= threshold <= 1:
        parts.append(f'<line x1="{sx(threshold):.1f}" y1="{y0}" x2="{sx(threshold):.1f}" y2="{y1}" stroke="#dc2626" '
                     f'stroke-dasharray="5 3"/><text x="{sx(threshold) - 4:.1f}" y="{y0 - 6}" text-anchor="end" '
                     f'fill="#dc2626">threshold {threshold:.3f}</text>')
    legend_y = y0 - 70
    for i, (name, colour) in enumerate((("precision", ACCENT), ("coverage", GOOD))):
        parts.append(f'<rect x="{x0 + 10}" y="{legend_y + i * 16}" width="12" height="3" fill="{colour}"/>'
                     f'<text x="{x0 + 28}" y="{legend_y + i * 16 + 5}" fill="{INK}">{name}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` intervals over `span`."""
    raw = span / ticks if span > 0 else 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def scatter(points: list[tuple[float, float, str]], xlabel: str, ylabel: str,
            width: int = 640, height: int = 300) -> Markup:
    """(x, y, label) points, y a rate in [0, 1], x from 0 (sizes): round ticks on both axes."""
    if not points:
        return Markup('<p class="muted">no run has both a GGUF size and an accuracy yet</p>')
    x0, y0, x1, y1 = 56, height - 44, width - 20, 12
    step = _nice_step(max(x for x, _, _ in points) * 1.1)
    top = step * math.ceil(max(x for x, _, _ in points) * 1.1 / step)
    low_y = max(0.0, math.floor((min(y for _, y, _ in points) - 0.05) * 10) / 10)

    def sx(v: float) -> float:
        return x0 + (x1 - x0) * v / top

    def sy(v: float) -> float:
        return y0 - (y0 - y1) * (v - low_y) / ((1 - low_y) or 1)

    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(ylabel)} against {escape(xlabel)}" {FONT} font-size="11">']
    xticks = [(sx(i * step), f"{i * step:g}") for i in range(int(round(top / step)) + 1)]
    yticks = [(sy(v / 100), f"{v}%") for v in range(int(round(low_y * 100)), 101, 10)]
    _axes(parts, x0, y0, x1, y1, xlabel, ylabel, xticks, yticks)
    for x, y, label in points:
        right = sx(x) > (x0 + x1) / 2  # labels of points on the right half go to their left
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{ACCENT}"><title>{escape(label)}: '
                     f'{y:.1%} at {x:.1f}</title></circle><text x="{sx(x) + (-8 if right else 8):.1f}" '
                     f'y="{sy(y) + 4:.1f}" text-anchor="{"end" if right else "start"}" fill="{INK}">'
                     f'{escape(label)} {y:.1%}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
