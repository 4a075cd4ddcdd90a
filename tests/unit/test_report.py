"""The report page (producer.report_html), rendered from results as the producer reads them:
one document with the history, the trend, the plot and a map per angle; images as data:
URIs only, a policy that forbids any other load, and no medical or risk word. Pure: no
services (tests/e2e/test_report.py opens a real one in Chromium)."""

from __future__ import annotations

import random
import re
from typing import Any

from PIL import Image

from changewatch.producer import report, report_html
from tests.helpers import found
from tests.unit.test_trend import ANGLES, annotated, history


def sessions() -> list[dict[str, Any]]:
    rng = random.Random(0)
    out = annotated(history([0.01 + 0.004 * i + rng.uniform(-0.002, 0.002) for i in range(9)]))
    for i, s in enumerate(out):
        s["session_id"] = f"{i:08d}-0000-0000-0000-000000000000"
        s["model_id"] = "resnet50/random/prep1"
    return out


def photo() -> str:
    """A thumbnail as the report makes one, of a 640x480 picture with a bright square."""
    image = Image.new("RGB", (640, 480), (40, 90, 160))
    image.paste((250, 230, 60), (300, 200, 360, 260))
    return report.data_uri(report.thumbnail(report.encode_jpeg(image)), "image/jpeg")


def page(regions: dict[str, list[dict[str, Any]]] | None = None) -> str:
    history_ = sessions()
    latest = history_[-1]
    photos = {}
    for row in latest["per_angle"]:
        row = dict(row)
        if regions and row["angle"] in regions:
            row["regions"] = regions[row["angle"]]
        photos[row["angle"]] = {"captured_at": latest["captured_at"], "row": row,
                                "thumbnail": photo()}  # fmt: skip
    return report_html.render(
        user_id="0b5d2c54-0000-4000-8000-000000000001",
        sessions=history_,
        plot="data:image/png;base64,iVBORw0KGgo=",
        photos=photos,
    )


def test_the_page_holds_everything_and_loads_nothing() -> None:
    html = page()
    assert f'content="{report_html.CSP}"' in html and "default-src 'none'" in html
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith("data:") for s in sources), sources
    assert "http://" not in html and "https://" not in html
    assert html.count("<tr>") == 1 + 10 + 1 + len(ANGLES)  # history, and the angle trends
    assert "rising" in html and "per 30 days" in html


def test_each_angle_shows_its_thumbnail_under_a_grid() -> None:
    html = page()
    maps = re.findall(r'<svg class="map".*?</svg>', html, re.DOTALL)
    assert len(maps) == len(ANGLES)
    for svg in maps:
        assert svg.count('class="thumb" href="data:image/jpeg;base64,') == 1
        assert svg.count('class="cell"') == 9
    assert html.count("no region map yet") == len(ANGLES)


def test_a_region_map_is_drawn_from_the_regions_fields() -> None:
    """The fields as shared between branches: nine regions, row-major from the top left."""
    names = report_html.REGIONS
    regions = [
        {"region": n, "change_score": 0.01, "noise_floor": 0.01, "relative_change": 1.0}
        for n in names
    ]
    regions[0] = {**regions[0], "change_score": 0.032, "relative_change": 3.2}
    html = page({"front": regions})
    front = re.search(r'<svg class="map" data-angle="front".*?</svg>', html, re.DOTALL)
    assert front is not None
    assert re.findall(r'data-region="(\w+)"', front.group(0)) == list(names)
    assert ">3.2x<" in front.group(0) and front.group(0).count(">1.0x<") == 8
    assert html.count("no region map yet") == len(ANGLES) - 1


def test_the_page_is_neutral() -> None:
    assert found(page()) == []


def test_the_latest_session_says_its_level_and_symmetry() -> None:
    """The level with what it was read against, and the left/right symmetry."""
    history_ = sessions()
    history_[-1] |= {
        "variation_level": "strong",
        "level_basis": "noise_floor",
        "symmetry": {"distance": 0.0123, "relative_change": 4.2},
    }
    html = report_html.render(
        user_id="0b5d2c54-0000-4000-8000-000000000001",
        sessions=history_,
        plot="data:image/png;base64,iVBORw0KGgo=",
        photos={},
    )
    assert "Level: <b>strong</b> (read against the noise floor)" in html
    assert "0.0123 apart, 4.2 x their usual variation" in html
