"""What the demo prints on stdout: the person's sessions, the trend, the comparison, and
where the plot and the HTML report were written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness.services import ROOT


def _score(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def format_comparison(last: int, first: int, result: dict[str, Any]) -> str:
    """The comparison of two sessions, with its layers, as a few readable lines."""
    lines = [
        f"Session {last} against session {first}: overall_delta {_score(result['overall_delta'])}"
        f" ({result['overall_trend']}, stability {_score(result['stability_index'])},"
        f" comparison_method {result['comparison_method']})",
        "",
        f"  {'layer':<10}{'delta':>8}  {'variation':<10}{'sessions':>9}",
    ]
    layers = result.get("layers", {})
    for name in ("immediate", "rolling", "monthly", "lifetime"):
        if name not in layers:
            continue
        layer = layers[name]
        lines.append(
            f"  {name:<10}{_score(layer['delta']):>8}  {layer['variation_level'] or '-':<10}"
            f"{layer['sessions']:>9}"
        )
    return "\n".join(lines)


def print_report(
    sessions: list[dict[str, Any]],
    comparison: dict[str, Any] | None,
    files: dict[str, Path],
    sent: int,
    as_json: bool,
) -> None:
    """The table of the ``sent`` sessions read back, the trend, then the comparison and
    the files written (``files``: "plot" and "report")."""
    from changewatch.producer import history

    if as_json:
        written = {name: str(path) for name, path in files.items()}
        print(json.dumps({"sessions": sessions, "comparison": comparison, **written}))
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
    if comparison is not None:
        print(format_comparison(sent, 1, comparison))
        print()
    for name, path in files.items():
        print(f"{name}: {path.relative_to(ROOT)}")
