"""Region maps in the results: each region's noise floor, and the regions that moved most.

Each angle row of an analysis carries its nine region scores (``regions``, row-major over
a 3x3 grid of the upright, centre-cropped square the model saw; worker/regions.py makes
them). A region's score is read like an angle's: against that region's own noise floor,
from the person's earlier scores of the same angle and region (``floor.noise_floor``).
``regions_moved`` names the few regions most outside their usual variation, in neutral
words. Pure functions over stored numbers, shared by producer and worker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .floor import noise_floor, relative_change

# Row-major, as every angle row lists them.
REGIONS: tuple[str, ...] = (
    "upper_left",
    "upper_centre",
    "upper_right",
    "middle_left",
    "centre",
    "middle_right",
    "lower_left",
    "lower_centre",
    "lower_right",
)
# At most this many regions in ``regions_moved``.
MOVED_MAX = 3


def region_words(region: str) -> str:
    """'upper_left' -> 'upper left': the name a person reads."""
    return region.replace("_", " ")


def _history(scored_earlier: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[float]]:
    """(angle, region) -> the earlier scores of that region, oldest first. Rows without
    regions (no region baseline yet, or stored before regions existed) add nothing."""
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for earlier in scored_earlier:
        for row in earlier["per_angle"]:
            for region in row.get("regions") or ():
                found[row["angle"], region["region"]].append(region["change_score"])
    return found


def annotate_regions(
    result: dict[str, Any], scored_earlier: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Give every region its noise floor and relative change, and the result its
    ``regions_moved``. ``scored_earlier``: earlier analyses scored against a baseline,
    oldest first."""
    history = _history(scored_earlier)
    for row in result["per_angle"]:
        regions = row.get("regions") or []
        for region in regions:
            floor = noise_floor(history.get((row["angle"], region["region"]), []))
            region["noise_floor"] = floor
            region["relative_change"] = relative_change(region["change_score"], floor)
        row["regions"] = regions
    result["regions_moved"] = regions_moved(result["per_angle"])
    return result


def regions_moved(per_angle: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The regions furthest outside their usual variation (relative change above 1),
    highest first. While no region has a floor yet, the highest scores instead, said
    as scores. At most ``MOVED_MAX``."""
    every = [(row["angle"], r) for row in per_angle for r in row.get("regions") or ()]
    with_floor = [(a, r) for a, r in every if r.get("relative_change") is not None]
    if with_floor:
        chosen = [(a, r) for a, r in with_floor if r["relative_change"] > 1.0]
        chosen.sort(key=lambda item: -item[1]["relative_change"])
    else:
        chosen = sorted((item for item in every if item[1]["change_score"] > 0), key=_by_score)
    return [_moved(angle, region) for angle, region in chosen[:MOVED_MAX]]


def _by_score(item: tuple[str, Mapping[str, Any]]) -> float:
    return -float(item[1]["change_score"])


def _moved(angle: str, region: Mapping[str, Any]) -> dict[str, Any]:
    relative = region.get("relative_change")
    where = f"{angle}, {region_words(region['region'])} region"
    if relative is None:
        text = (
            f"{where}: change {region['change_score']:.4f} (its usual variation is not known yet)"
        )
    else:
        text = f"{where}: {relative:.1f}x its usual variation"
    return {
        "angle": angle,
        "region": region["region"],
        "change_score": region["change_score"],
        "relative_change": relative,
        "text": text,
    }
