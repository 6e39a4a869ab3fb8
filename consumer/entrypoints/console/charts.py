"""The overview's chart: batches finished per minute over the last hour, failed ones stacked
in red, as an SVG drawn on the server (no chart library, nothing to load)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from consumer.adapters.console_queries import Minute

WIDTH, HEIGHT = 600, 160
LEFT, BOTTOM, TOP = 36, 20, 10


def _scale(peak: int) -> int:
    """A round top for the y axis, at least 1."""
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000):
        if peak <= step:
            return step
    return peak


def throughput_chart(minutes: Sequence[Minute]) -> Markup:
    """60 bars (oldest left); the title of each bar says its minute and counts."""
    top = _scale(max((m.finished for m in minutes), default=0))
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    bar_w = plot_w / max(len(minutes), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="batches finished per minute, last hour">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 4}" y2="{TOP + plot_h}" '
        'class="axis"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" class="tick" text-anchor="end">{top}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" class="tick" text-anchor="end">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 4}" class="tick">-60 min</text>',
        f'<text x="{WIDTH - 4}" y="{HEIGHT - 4}" class="tick" text-anchor="end">now</text>',
    ]
    for i, minute in enumerate(minutes):
        x = LEFT + i * bar_w
        ok_h = plot_h * (minute.finished - minute.failed) / top
        failed_h = plot_h * minute.failed / top
        label = escape(
            f"{minute.at:%H:%M} UTC: {minute.finished} finished, {minute.failed} failed or partial"
        )
        parts.append(f"<g><title>{label}</title>")
        parts.append(
            f'<rect class="ok" x="{x:.1f}" y="{TOP + plot_h - ok_h:.1f}" '
            f'width="{bar_w * 0.8:.1f}" height="{ok_h:.1f}"/>'
        )
        parts.append(
            f'<rect class="failed" x="{x:.1f}" y="{TOP + plot_h - ok_h - failed_h:.1f}" '
            f'width="{bar_w * 0.8:.1f}" height="{failed_h:.1f}"/></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text only
