"""What the demo prints on stdout: the person's sessions, the trend, the comparison, and
where the plot and the HTML report were written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness.services import ROOT


def _score(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _times(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def format_comparison(current: int, previous: int, result: dict[str, Any]) -> str:
    """The comparison of two sessions, with its layers, as a few readable lines."""
    scale = result.get("variation_levels", {})
    lines = [
        f"Session {current} against session {previous}: overall_delta"
        f" {_score(result['overall_delta'])} ({result['overall_trend']},"
        f" {_times(result.get('relative_delta'))} x floor, stability"
        f" {_score(result['stability_index'])}, comparison_method {result['comparison_method']})",
        f"  levels read against: {result.get('level_basis', '-')}"
        f" (floor {_score(scale.get('noise_floor'))})",
        "",
        f"  {'layer':<10}{'delta':>8}  {'x floor':>7}  {'variation':<10}{'sessions':>9}",
    ]
    layers = result.get("layers", {})
    for name in ("immediate", "rolling", "monthly", "lifetime"):
        if name not in layers:
            continue
        layer = layers[name]
        lines.append(
            f"  {name:<10}{_score(layer['delta']):>8}  {_times(layer.get('relative')):>7}"
            f"  {layer['variation_level'] or '-':<10}{layer['sessions']:>9}"
        )
    return "\n".join(lines)


def regions_lines(result: dict[str, Any]) -> str:
    """Where the last session's photos changed most: its ``regions_moved``, one a line."""
    moved = result.get("regions_moved") or []
    if not moved:
        mapped = any(row.get("regions") for row in result.get("per_angle", []))
        return (
            "regions: every region inside its usual variation"
            if mapped
            else "regions: no region map yet (no earlier session to compare with)"
        )
    lines = ["regions that moved most in the last session:"]
    lines += [f"  {item['text']}" for item in moved]
    return "\n".join(lines)


def print_report(
    sessions: list[dict[str, Any]],
    comparisons: list[tuple[int, int, dict[str, Any]]],
    files: dict[str, Path],
    as_json: bool,
) -> None:
    """The table of the sessions read back, the trend, then the comparisons and the
    files written (``files``: "plot" and "report")."""
    from changewatch.producer import history

    if as_json:
        listed = [{"current": c, "previous": p, "result": result} for c, p, result in comparisons]
        first = comparisons[0][2] if comparisons else None
        written = {name: str(path) for name, path in files.items()}
        print(
            json.dumps(
                {"sessions": sessions, "comparison": first, "comparisons": listed, **written}
            )
        )
        return
    first = sessions[0]
    print()
    print(f"One person, {len(sessions)} sessions; model {first['model_id']}")
    print("change: cosine distance to the mean of the person's earlier sessions (0 = none);")
    print("floor: the person's own usual variation; x floor: change / floor (< 1: usual).")
    print()
    print(history.table(sessions))
    print()
    print(history.trend_line(sessions[-1]))
    print()
    print(regions_lines(sessions[-1]))
    print()
    for current, previous, result in comparisons:
        print(format_comparison(current, previous, result))
        print()
    for name, path in files.items():
        print(f"{name}: {path.relative_to(ROOT)}")
