"""``python -m changewatch.producer history U``: a person's sessions as a readable
table, and a plot.

The table puts each session's score beside the person's noise floor, whether it fell in
the range its history expected, the trend's direction and the flags that say how to read
it; a last line gives the trend with its interval and the range for the next session.
The plot shows change over time per angle with the noise band, marks sessions with
lower-quality photos or another camera, and draws the trend with the range expected next.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..schema.contract import ANGLES
from ..schema.trend import MIN_SESSIONS, scaled, to_months


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def flags_of(session: dict[str, Any]) -> list[str]:
    """Short neutral notes for one session: first, lower quality, camera, confidence."""
    notes = []
    if session["is_first_session"]:
        notes.append("first session")
    if session.get("low_quality_angles"):
        notes.append("quality: " + ",".join(session["low_quality_angles"]))
    if (session.get("equipment") or {}).get("changed"):
        notes.append("camera: " + ",".join(session["equipment"]["angles"]))
    confidence = session.get("confidence") or {}
    if confidence.get("level"):
        notes.append(f"confidence {confidence['level']}")
    return notes


def _expected(session: dict[str, Any]) -> str:
    """Whether the score fell inside the range its history expected: in, out or -."""
    inside = session.get("within_expected")
    return "-" if inside is None else "in" if inside else "out"


def trend_line(session: dict[str, Any]) -> str:
    """The trend as of one session, in words and numbers (the last session's is the
    person's current one)."""
    trend = session.get("trend") or {}
    if not trend.get("direction"):
        return f"trend: not yet (it needs {MIN_SESSIONS} scored sessions)"
    low, high = trend["slope_interval"]
    text = (
        f"trend over the last {trend['sessions']} scored sessions: {trend['direction']},"
        f" {trend['slope_per_30_days']:+.3g} per 30 days"
        f" ({round(100 * trend['interval_level'])}% interval {low:+.3g} to {high:+.3g})"
    )
    nxt = trend.get("expected_next")
    if nxt:
        text += (
            f"; next session expected between {nxt['low']:.3g} and {nxt['high']:.3g}"
            f" (about {nxt['after_days']:.0f} days on)"
        )
    return text


def table(sessions: list[dict[str, Any]]) -> str:
    """One line per session, in capture order: date, session score, noise floor, score /
    floor, per-angle scores, whether the score was in the expected range, the trend's
    direction, notes."""
    angles = [a for a in ANGLES if any(p["angle"] == a for s in sessions for p in s["per_angle"])]
    header = ["captured", "session", "change", "floor", "x floor", *angles, "expected", "trend",
              "notes"]  # fmt: skip
    rows = [header]
    for s in sessions:
        by_angle = {p["angle"]: p["change_score"] for p in s["per_angle"]}
        rows.append(
            [
                s["captured_at"][:16].replace("T", " "),
                s["session_id"][:8],
                _num(s["change_score"]),
                _num(s.get("noise_floor")),
                _num(s.get("relative_change"), 1),
                *[_num(by_angle.get(a)) for a in angles],
                _expected(s),
                (s.get("trend") or {}).get("direction") or "-",
                "; ".join(flags_of(s)),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def plot(sessions: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Change over time per angle, the noise band, and markers for quality and camera."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [datetime.fromisoformat(s["captured_at"]) for s in sessions]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    floors = [s.get("noise_floor") for s in sessions]
    if any(f is not None for f in floors):
        band = [f if f is not None else float("nan") for f in floors]
        ax.fill_between(
            times, 0, band, color="tab:gray", alpha=0.35, step="mid", label="noise floor (session)"
        )
    for angle in ANGLES:
        points = [
            (t, p["change_score"])
            for t, s in zip(times, sessions, strict=True)
            for p in s["per_angle"]
            if p["angle"] == angle
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", linewidth=1, label=angle)
    ax.plot(times, [s["change_score"] for s in sessions], color="black", linewidth=2.2,
            marker="o", label="session")  # fmt: skip
    for t, s in zip(times, sessions, strict=True):
        if s.get("low_quality_angles"):
            ax.scatter([t], [s["change_score"]], marker="s", s=140, facecolors="none",
                       edgecolors="tab:orange", linewidths=2)  # fmt: skip
        if (s.get("equipment") or {}).get("changed"):
            ax.scatter([t], [s["change_score"]], marker="^", s=160, facecolors="none",
                       edgecolors="tab:purple", linewidths=2)  # fmt: skip
    _draw_trend(ax, sessions, times)
    ax.scatter([], [], marker="s", facecolors="none", edgecolors="tab:orange",
               label="lower photo quality")  # fmt: skip
    ax.scatter([], [], marker="^", facecolors="none", edgecolors="tab:purple",
               label="another camera")  # fmt: skip
    ax.set_ylabel("change (cosine distance)")
    ax.set_ylim(bottom=0)
    ax.set_title(title or "change over time")
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _draw_trend(ax: Any, sessions: list[dict[str, Any]], times: list[datetime]) -> None:
    """The latest trend over its window (its line, scaled back to each session's baseline
    size, as schema.trend reads scores), and the range expected next."""
    trend = sessions[-1].get("trend") or {}
    if not trend.get("direction"):
        return
    scored = [(t, s) for t, s in zip(times, sessions, strict=True) if not s["is_first_session"]]
    window = scored[-trend["sessions"] :]
    slope, last = trend["slope_per_30_days"], to_months(window[-1][0])
    level = statistics.median(
        scaled(s["change_score"], s["baseline_session_count"]) - slope * (to_months(t) - last)
        for t, s in window
    )
    line = [
        (level + slope * (to_months(t) - last)) * (1 + 1 / s["baseline_session_count"])
        for t, s in window
    ]
    ax.plot([t for t, _ in window], line, color="black", linestyle="--", linewidth=1.2,
            label=f"trend: {trend['direction']}")  # fmt: skip
    nxt = trend.get("expected_next")
    if nxt:
        at = window[-1][0] + timedelta(days=nxt["after_days"])
        ax.plot([at, at], [nxt["low"], nxt["high"]], color="tab:gray", linewidth=5,
                solid_capstyle="butt", label="expected next")  # fmt: skip
