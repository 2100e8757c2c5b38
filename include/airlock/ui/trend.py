"""A check history as a small inline SVG, drawn on the server (no script, no external asset).

One dot per ``checked`` record, placed by time on the x axis and by verdict on
the y axis (pass on top, error in the middle, fail at the bottom), joined by a
thin line, so a run of passes reads as a flat line and a failure as a drop.
Every dot carries a ``<title>`` (when, verdict, target, summary) as a tooltip;
those strings come from storage and are escaped here, the only place this
module emits text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from markupsafe import Markup

from airlock.redact import safe_text
from airlock.ui.views import CheckPoint

WIDTH = 168
HEIGHT = 30
PAD = 5
_ROW = {"pass": PAD, "error": HEIGHT // 2, "fail": HEIGHT - PAD}
COLOURS = {"pass": "#2f855a", "error": "#b7791f", "fail": "#c53030"}


def trend_svg(points: Sequence[CheckPoint], *, label: str) -> Markup:
    """The SVG for ``points`` (oldest first); an empty history gives an empty string."""
    if not points:
        return Markup("")
    xs = _x_positions(points)
    dots = []
    for x, point in zip(xs, points, strict=True):
        y = _ROW.get(point.verdict, _ROW["error"])
        colour = COLOURS.get(point.verdict, COLOURS["error"])
        tip = f"{point.at.astimezone(UTC):%Y-%m-%d %H:%M} UTC · {point.verdict} · {point.target}: {point.summary}"
        dots.append(Markup('<circle cx="{}" cy="{}" r="3" fill="{}"><title>{}</title></circle>').format(
            f"{x:.1f}", y, colour, safe_text(tip, escape_backslash=False)))
    line = " ".join(f"{x:.1f},{_ROW.get(p.verdict, _ROW['error'])}" for x, p in zip(xs, points, strict=True))
    passes = sum(p.verdict == "pass" for p in points)
    summary = f"{label}: {passes} of {len(points)} checks passed"
    return Markup(
        '<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'role="img" aria-label="{summary}"><title>{summary}</title>'
        '<line x1="0" y1="{top}" x2="{w}" y2="{top}" stroke="#e2e8f0" stroke-width="1"/>'
        '<line x1="0" y1="{bottom}" x2="{w}" y2="{bottom}" stroke="#e2e8f0" stroke-width="1"/>'
        '<polyline points="{line}" fill="none" stroke="#a0aec0" stroke-width="1"/>{dots}</svg>'
    ).format(w=WIDTH, h=HEIGHT, top=_ROW["pass"], bottom=_ROW["fail"], summary=summary, line=line,
             dots=Markup("").join(dots))


def _x_positions(points: Sequence[CheckPoint]) -> list[float]:
    """x by time between the first and the last record; equal times (or one record) spread evenly."""
    span = WIDTH - 2 * PAD
    if len(points) == 1:
        return [WIDTH / 2]
    first, last = points[0].at, points[-1].at
    total = (last - first).total_seconds()
    if total <= 0:
        return [PAD + span * i / (len(points) - 1) for i in range(len(points))]
    return [PAD + span * (p.at - first).total_seconds() / total for p in points]

