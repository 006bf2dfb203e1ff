"""Tables and plots of the reproduction runners: mean ± spread over seeds, markdown, CSV and SVG (no plotting
library: the SVG is written by hand, so the report needs nothing beyond the project's own packages)."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from html import escape
from pathlib import Path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN for none)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: Sequence[float], digits: int = 1) -> str:
    """``mean ± std`` over seeds, or ``-`` when there is nothing to show."""
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def bar_chart_svg(panels: dict[str, dict[str, dict[str, list[float]]]], series: Sequence[str], y_label: str,
                  title: str) -> str:
    """Grouped bars with ±1 std whiskers: ``panels[panel][group][series] = values over seeds``; one panel per
    task, one group of bars per arm, one bar per series (e.g. seen / unseen / total)."""
    groups_max = max(len(groups) for groups in panels.values())
    width_panel, height, top, bottom, left = 90 + groups_max * (len(series) * 14 + 18), 300, 40, 110, 50
    width = left + width_panel * len(panels) + 20
    highest = max([_top(v) for groups in panels.values() for bars in groups.values() for v in bars.values()] + [1.0])
    scale = _nice(highest)
    y = lambda value: top + (height - top - bottom) * (1 - value / scale)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" font-family="sans-serif" '
           f'font-size="11">', f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for p, (panel, groups) in enumerate(panels.items()):
        x0 = left + p * width_panel
        out.append(f'<text x="{x0 + width_panel / 2}" y="34" text-anchor="middle" font-weight="bold">{escape(panel)}</text>')
        for tick in range(5):
            value = scale * tick / 4
            out.append(f'<line x1="{x0}" x2="{x0 + width_panel - 20}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                       f'stroke="#ddd"/><text x="{x0 - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>')
        x = x0 + 10
        for group, bars in groups.items():
            for s, name in enumerate(series):
                values = bars.get(name, [])
                if values:
                    mean, std = mean_std(values)
                    out.append(f'<rect x="{x:.1f}" y="{y(mean):.1f}" width="12" height="{y(0) - y(mean):.1f}" '
                               f'fill="{COLORS[s % len(COLORS)]}"><title>{escape(group)} {escape(name)}: '
                               f'{mean:.2f} ± {std:.2f}</title></rect>')
                    if std:
                        out.append(f'<line x1="{x + 6:.1f}" x2="{x + 6:.1f}" y1="{y(mean + std):.1f}" '
                                   f'y2="{y(max(0.0, mean - std)):.1f}" stroke="black"/>')
                x += 14
            label_x = x - len(series) * 7
            out.append(f'<text transform="translate({label_x:.1f},{y(0) + 8:.1f}) rotate(45)">{escape(group)}</text>')
            x += 18
        out.append(f'<line x1="{x0}" x2="{x0 + width_panel - 20}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="black"/>')
    out.append(f'<text transform="translate(14,{(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(y_label)}</text>')
    for s, name in enumerate(series):
        out.append(f'<rect x="{left + s * 90}" y="{height + 8}" width="12" height="12" fill="{COLORS[s % len(COLORS)]}"/>'
                   f'<text x="{left + s * 90 + 16}" y="{height + 18}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _top(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    mean, std = mean_std(values)
    return mean + std


def _nice(value: float) -> float:
    """A round axis maximum at or above ``value``."""
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= value)


def line_chart_svg(series: dict[str, list[list[float]]], xs: Sequence[int], x_label: str, y_label: str,
                   title: str) -> str:
    """One line per series through the means at ``xs`` (``series[name][k]`` = values over seeds at ``xs[k]``),
    with ±1 std whiskers."""
    width, height, top, bottom, left, right = 560, 320, 40, 50, 60, 170
    points = [v for lines in series.values() for values in lines for v in values] + [0.0]
    low, high = min(min(points), 0.0), max(max(points), 1e-9)
    scale_high = _nice(high)
    scale_low = -_nice(-low) if low < 0 else 0.0
    x = lambda k: left + (width - left - right) * (k / max(1, len(xs) - 1))  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (scale_high - v) / (scale_high - scale_low)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">', f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for tick in range(5):
        value = scale_low + (scale_high - scale_low) * tick / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    for k, value in enumerate(xs):
        out.append(f'<text x="{x(k):.1f}" y="{height - bottom + 16}" text-anchor="middle">{value}</text>')
    for s, (name, lines) in enumerate(series.items()):
        color = COLORS[s % len(COLORS)]
        stats = [mean_std(values) if values else None for values in lines]
        path = " ".join(f"{x(k):.1f},{y(m):.1f}" for k, st in enumerate(stats) if st for m in [st[0]])
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for k, st in enumerate(stats):
            if st:
                mean, std = st
                out.append(f'<circle cx="{x(k):.1f}" cy="{y(mean):.1f}" r="3" fill="{color}"><title>{escape(name)} '
                           f'{xs[k]}: {mean:.3f} ± {std:.3f}</title></circle>')
                if std:
                    out.append(f'<line x1="{x(k):.1f}" x2="{x(k):.1f}" y1="{y(mean + std):.1f}" y2="{y(mean - std):.1f}" '
                               f'stroke="{color}"/>')
        out.append(f'<line x1="{width - right + 10}" x2="{width - right + 30}" y1="{top + 16 * s}" y2="{top + 16 * s}" '
                   f'stroke="{color}" stroke-width="2"/><text x="{width - right + 34}" y="{top + 16 * s + 4}">'
                   f'{escape(name)}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14,{(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(y_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
