"""The person's report as one HTML document: pure, from results already read.

Sections: the latest session (score, floor, the expected range, confidence), the trend,
the plot, each angle's latest region map over a thumbnail of its photo, and the history
table. Region maps are drawn from ``per_angle[].regions`` (nine cells, row-major from the
top-left of the upright centre square the model saw); an angle whose result has none
shows its thumbnail under an empty 3x3 grid and says "no region map yet". Every text is
escaped; every image is a data: URI; the Content-Security-Policy forbids any other load.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from ..schema.contract import ANGLES
from .history import flags_of, trend_line

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
REGIONS = (
    "upper_left", "upper_centre", "upper_right",
    "middle_left", "centre", "middle_right",
    "lower_left", "lower_centre", "lower_right",
)  # fmt: skip
MAP_SIDE = 240
# A region at this many times its usual variation is drawn at full strength.
FULL_SHADE_AT = 4.0
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px}
.muted{color:#666} table{border-collapse:collapse;font-size:12px}
td,th{padding:3px 7px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
td:last-child,th:last-child{text-align:left;white-space:normal}
.maps{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0}
figcaption{font-size:12px;color:#444;max-width:240px}
.box{background:#f5f5f5;padding:10px 14px;border-radius:6px}
img.plot{max-width:100%;border:1px solid #ddd}
"""


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(region: dict[str, Any], strongest: float) -> tuple[float, str]:
    """(shade 0..1, label) of one region: by its relative change, else by its score."""
    relative = region.get("relative_change")
    if relative is not None:
        return min(1.0, relative / FULL_SHADE_AT), f"{relative:.1f}x"
    score = float(region.get("change_score") or 0.0)
    return (score / strongest if strongest > 0 else 0.0), f"{score:.3f}"


def region_map(angle: str, photo: dict[str, Any]) -> str:
    """One angle's map: the thumbnail, a 3x3 grid over it, and each region's shade and value."""
    side, third = MAP_SIDE, MAP_SIDE / 3
    regions = {r["region"]: r for r in photo["row"].get("regions") or []}
    parts = [
        f'<svg class="map" data-angle="{escape(angle)}" width="{side}" height="{side}"'
        f' viewBox="0 0 {side} {side}" role="img" aria-label="{escape(angle)} region map">',
        f'<rect width="{side}" height="{side}" fill="#ccc"/>',
    ]
    if photo.get("thumbnail"):
        parts.append(
            f'<image class="thumb" href="{photo["thumbnail"]}" width="{side}" height="{side}"/>'
        )
    strongest = max((float(r.get("change_score") or 0) for r in regions.values()), default=0.0)
    for i, name in enumerate(REGIONS):
        x, y = (i % 3) * third, (i // 3) * third
        box = f'x="{x:.1f}" y="{y:.1f}" width="{third:.1f}" height="{third:.1f}"'
        region = regions.get(name)
        if region is None:
            parts.append(f'<rect class="cell" {box} fill="none" stroke="#fff" stroke-width="1"/>')
            continue
        shade, label = _cell(region, strongest)
        parts.append(
            f'<rect class="cell" data-region="{name}" {box} fill="#ff8c00"'
            f' fill-opacity="{0.65 * shade:.3f}" stroke="#fff" stroke-width="1"/>'
            f'<text x="{x + third / 2:.1f}" y="{y + third / 2 + 5:.1f}" text-anchor="middle"'
            f' font-size="14" fill="#fff" stroke="#000" stroke-width="0.6">{escape(label)}</text>'
        )
    parts.append("</svg>")
    when = escape(photo["captured_at"][:10])
    note = "" if regions else '<br><span class="muted no-map">no region map yet</span>'
    if not photo.get("thumbnail"):
        note += '<br><span class="muted">photo could not be read</span>'
    caption = f"<figcaption><b>{escape(angle)}</b>, session of {when}{note}</figcaption>"
    return f"<figure>{''.join(parts)}{caption}</figure>"


def _latest(session: dict[str, Any]) -> str:
    """The latest session against the person's own history, and its confidence."""
    confidence = session.get("confidence") or {}
    expected = (session.get("trend") or {}).get("expected")
    inside = session.get("within_expected")
    lines = [
        f"<p>Session of {escape(session['captured_at'][:16].replace('T', ' '))}:"
        f" change {_num(session['change_score'])}, noise floor {_num(session.get('noise_floor'))},"
        f" {_num(session.get('relative_change'), 1)} x floor.</p>",
    ]
    if session.get("variation_level"):
        basis = str(session.get("level_basis") or "").replace("_", " ")
        lines.append(
            f"<p>Level: <b>{escape(str(session['variation_level']))}</b>"
            f" (read against the {escape(basis)}).</p>"
        )
    symmetry = session.get("symmetry") or {}
    if symmetry.get("relative_change") is not None:
        lines.append(
            f"<p>Left/right: the two sides are {symmetry['distance']:.3g} apart,"
            f" {symmetry['relative_change']:.1f} x their usual variation.</p>"
        )
    if expected:
        verdict = "inside" if inside else "outside"
        lines.append(
            f"<p>Its history expected {expected['low']:.3g} to {expected['high']:.3g}:"
            f" the score fell <b>{verdict}</b> that range.</p>"
        )
    else:
        lines.append("<p>No expected range yet (too few earlier sessions).</p>")
    reasons = "; ".join(confidence.get("reasons") or []) or "none"
    lines.append(
        f"<p>Confidence: <b>{escape(str(confidence.get('level', '-')))}</b>"
        f" ({_num(confidence.get('score'), 2)}); what lowers it: {escape(reasons)}.</p>"
    )
    moved = [m["text"] for m in session.get("regions_moved") or [] if m.get("text")]
    if moved:
        lines.append("<p>Regions that moved most: " + escape("; ".join(moved)) + ".</p>")
    return '<div class="box" id="latest">' + "".join(lines) + "</div>"


def _trend(session: dict[str, Any]) -> str:
    """The trend line in words, and each angle's slope."""
    trend = session.get("trend") or {}
    rows = "".join(
        f"<tr><td>{escape(a['angle'])}</td><td>{a['sessions']}</td>"
        f"<td>{escape(a['direction'] or '-')}</td><td>{_sig(a['slope_per_30_days'])}</td>"
        f"<td>{_interval(a['slope_interval'])}</td></tr>"
        for a in trend.get("per_angle") or []
    )
    head = "<tr><th>angle</th><th>sessions</th><th>direction</th><th>per 30 days</th>"
    head += "<th>95% interval</th></tr>"
    return (
        f'<p id="trend">{escape(trend_line(session))}</p>'
        f'<table id="angle-trends">{head}{rows}</table>'
    )


def _interval(interval: list[float] | None) -> str:
    return "-" if not interval else f"{interval[0]:+.3g} to {interval[1]:+.3g}"


def _sig(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3g}"


def history_table(sessions: list[dict[str, Any]]) -> str:
    """One row per session, as ``producer history`` prints them."""
    angles = [a for a in ANGLES if any(p["angle"] == a for s in sessions for p in s["per_angle"])]
    head = ["captured", "change", "floor", "x floor", *angles, "expected", "trend", "notes"]
    out = ['<table id="history"><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for s in sessions:
        by_angle = {p["angle"]: p["change_score"] for p in s["per_angle"]}
        inside = s.get("within_expected")
        cells = [
            s["captured_at"][:16].replace("T", " "),
            _num(s["change_score"]),
            _num(s.get("noise_floor")),
            _num(s.get("relative_change"), 1),
            *[_num(by_angle.get(a)) for a in angles],
            "-" if inside is None else "in" if inside else "out",
            (s.get("trend") or {}).get("direction") or "-",
            "; ".join(flags_of(s)),
        ]
        out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def render(
    *, user_id: str, sessions: list[dict[str, Any]], plot: str, photos: dict[str, dict[str, Any]]
) -> str:
    """The whole document. ``plot``: a PNG data: URI; ``photos``: angle -> {captured_at,
    row (the per_angle entry), thumbnail (a data: URI or None)}."""
    latest = sessions[-1]
    maps = "".join(region_map(a, photos[a]) for a in ANGLES if a in photos)
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>changewatch report: {escape(user_id)}</title><style>{STYLE}</style></head>
<body>
<h1>How this person's photos changed</h1>
<p class="muted">Person {escape(user_id)}; {len(sessions)} sessions; model
{escape(latest["model_id"])}; written {made}. Each score is the change against this
person's own earlier sessions; the noise floor is how much their sessions usually vary.
The numbers say how much the photos changed, not what a change means.</p>
<h2>Latest session</h2>{_latest(latest)}
<h2>Trend</h2>{_trend(latest)}
<h2>Change over time</h2><img class="plot" alt="change over time" src="{plot}">
<h2>Where the latest photos changed</h2><div class="maps">{maps}</div>
<p class="muted">Each map is the photo's centre square in a 3x3 grid; a region is shaded by
its change against its own usual variation (x its floor), or by its score until it has one.</p>
<h2>History</h2>{history_table(sessions)}
</body></html>
"""
