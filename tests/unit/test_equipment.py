"""Unit tests for worker.equipment (EXIF make/model/lens of real photos) and
schema.equipment (compare()).

Pure, no services: real photos from $CHANGEWATCH_PHOTOS (skips on a developer machine
without them, fails in CI), plus small images made in memory. Nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pillow_heif import register_heif_opener

from bench.harness.services import PHOTOS
from changewatch.schema.contract import ANGLES
from changewatch.schema.equipment import (
    Equipment,
    compare,
    device_key,
    from_json,
    recent_device,
    same_device,
    to_json_map,
)
from changewatch.worker.equipment import read
from tests.helpers import require

register_heif_opener()

QUIRKS = sorted((PHOTOS / "exif-quirks").glob("*")) if (PHOTOS / "exif-quirks").is_dir() else []


def _photo(relative: str) -> Path:
    path = PHOTOS / relative
    require(path.is_file(), f"real photo {path} is missing; set CHANGEWATCH_PHOTOS")
    return path


def _read(relative: str) -> Equipment | None:
    with Image.open(_photo(relative)) as image:
        return read(image)


def _known(relative: str) -> Equipment:
    e = _read(relative)
    assert e is not None, f"{relative} should name its camera"
    return e


@pytest.fixture(scope="module")
def iphone() -> Equipment:
    return _known("camera/iphone_hdr_NO.jpg")


@pytest.fixture(scope="module")
def nokia() -> Equipment:
    return _known("camera/HMD_Nokia_8.3_5G.jpg")


@pytest.fixture(scope="module")
def canon() -> Equipment:
    return _known("camera/canon_hdr_NO.jpg")


def _session(device: Equipment | None, angles: tuple[str, ...] = ANGLES) -> dict[str, Any]:
    return dict.fromkeys(angles, device)


# --- read(): real photos -------------------------------------------------------------


def test_iphone_jpeg(iphone: Equipment) -> None:
    assert iphone == Equipment("Apple", "iPhone 6", "iPhone 6 back camera 4.15mm f/2.2", 3264, 2448)
    assert _read("camera/iphone_hdr_YES.jpg") == iphone


def test_nokia_jpeg(nokia: Equipment) -> None:
    assert nokia == Equipment("HMD Global", "Nokia 8.3 5G", None, 4608, 1976)


def test_canon_with_orientation_6_reports_stored_pixels(canon: Equipment) -> None:
    with Image.open(_photo("camera/canon_hdr_NO.jpg")) as image:
        assert image.getexif().get(0x0112) == 6
    # As stored (landscape), not as displayed after turning upright.
    assert canon == Equipment("Canon", "Canon PowerShot SX60 HS", None, 2048, 1536)


def test_heic_from_iphone_13() -> None:
    e = _known("heic/iphone_13_pro_max.HEIC")
    assert (e.make, e.model) == ("Apple", "iPhone 13 Pro Max")
    assert e.lens == "iPhone 13 Pro Max back triple camera 5.7mm f/1.5"
    assert (e.width, e.height) == (3024, 4032)
    assert _known("heic/IMG_5195.HEIC").model == "iPhone 11 Pro Max"


@pytest.mark.parametrize(
    "relative",
    [
        "camera/no_exif.jpg",  # EXIF from an editor, no make or model
        "camera/Reconyx_HC500_Hyperfire.jpg",  # EXIF without make or model
        "heic/HMD_Nokia_8.3_5G.heif",  # HEIF EXIF with a software tag only
        "exif-quirks/BSG1.tiff",
    ],
)
def test_no_make_or_model_is_unknown(relative: str) -> None:
    assert _read(relative) is None


def test_png_without_exif_is_unknown() -> None:
    with Image.open(_photo("camera/iphone_hdr_NO.jpg")) as image:
        image.draft("RGB", (160, 160))
        small = image.convert("RGB")
    buffer = io.BytesIO()
    small.save(buffer, "PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as png:
        assert png.format == "PNG"
        assert read(png) is None


@pytest.mark.parametrize("path", QUIRKS, ids=[p.name for p in QUIRKS])
def test_exif_quirks_never_raise(path: Path) -> None:
    with Image.open(path) as image:
        e = read(image)
    if e is not None:
        for text in (e.make, e.model, e.lens):
            assert text is None or (text == text.strip() and "\x00" not in text and text)


def test_exif_quirks_present() -> None:
    require(len(QUIRKS) >= 10, f"exif-quirks photos are missing under {PHOTOS}")


def test_exif_quirks_values_are_stripped() -> None:
    assert _known("exif-quirks/36-memory_error.jpg").model == "EX-M2"
    olympus = _known("exif-quirks/42_IndexError.jpg")
    assert (olympus.make, olympus.model) == ("OLYMPUS IMAGING CORP.", "E-P3")
    assert _known("exif-quirks/35-empty.jpg").make == "CASIO COMPUTER CO.,LTD"
    assert _known("exif-quirks/67-0_length_string.jpg").model == "SM-G930F"
    nikon = _known("exif-quirks/87_OSError.jpg")
    assert (nikon.model, nikon.lens) == ("NIKON D70s", "18.0-70.0 mm f/3.5-4.5")


def test_size_before_draft_or_given() -> None:
    with Image.open(_photo("camera/HMD_Nokia_8.3_5G.jpg")) as image:
        before = read(image)
        original = image.size
        image.draft("RGB", (448, 448))
        assert image.size != original
        assert read(image, size=original) == before
        drafted = read(image)
    assert before is not None and drafted is not None
    assert (before.width, before.height) == original
    assert same_device(before, drafted)


# --- read(): made-up EXIF ------------------------------------------------------------


def test_nul_bytes_and_whitespace_are_stripped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "  Apple\x00\x00junk"
    exif[0x0110] = "iPhone 13 Pro Max\x00\x00"
    exif.get_ifd(0x8769)[0xA434] = " iPhone 13 Pro Max front camera 2.71mm f/2.2\x00"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, "JPEG", exif=exif)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert read(image) == Equipment(
            "Apple", "iPhone 13 Pro Max", "iPhone 13 Pro Max front camera 2.71mm f/2.2", 40, 30
        )


class _OddExif(dict[int, Any]):
    def get_ifd(self, tag: int) -> dict[int, Any]:
        raise ValueError("broken Exif IFD")


class _OddImage:
    """Stands in for an image whose metadata is damaged in ways Pillow passes through."""

    def __init__(self, exif: Any, size: Any = (10, 10)) -> None:
        self._exif, self.size = exif, size

    def getexif(self) -> Any:
        if isinstance(self._exif, Exception):
            raise self._exif
        return self._exif


def test_odd_values_never_raise() -> None:
    bytes_tags = _OddImage(_OddExif({0x010F: b"Canon\x00", 0x0110: b"\xff\xfeCam "}))
    e = read(bytes_tags)  # type: ignore[arg-type]
    assert e is not None and e.make == "Canon" and e.model is not None and e.lens is None
    assert read(_OddImage(_OddExif({0x010F: 42, 0x0110: (1, 2)}))) is None  # type: ignore[arg-type]
    assert read(_OddImage(_OddExif({0x010F: "\x00\x00 ", 0x0110: ""}))) is None  # type: ignore[arg-type]
    assert read(_OddImage(SyntaxError("not a TIFF file"))) is None  # type: ignore[arg-type]
    bad_size = _OddImage(_OddExif({0x0110: "X"}), size=None)
    assert read(bad_size) == Equipment(None, "X", None, None, None)  # type: ignore[arg-type]
    assert read(_OddImage(_OddExif({0x0110: "M" * 10_000})), size=(0, -1)) == Equipment(  # type: ignore[arg-type]
        None, "M" * 128, None, None, None
    )


# --- device sameness -----------------------------------------------------------------


def test_device_key_is_case_and_whitespace_insensitive(canon: Equipment) -> None:
    shouty = Equipment("CANON", "canon  powershot\tSX60 HS", None, 1, 1)
    assert device_key(shouty) == device_key(canon) == ("canon", "canon powershot sx60 hs", "")


def test_dimensions_alone_are_not_a_device_change(canon: Equipment) -> None:
    rotated = dataclasses.replace(canon, width=canon.height, height=canon.width)
    smaller = dataclasses.replace(canon, width=640, height=480)
    history = [_session(canon), _session(rotated)]
    result = compare(history, _session(smaller))
    assert result["status"] == "same" and result["changed"] is False and result["angles"] == []
    assert result["to"] == smaller.to_json()


def test_another_lens_is_another_device(iphone: Equipment) -> None:
    front_camera = dataclasses.replace(iphone, lens="iPhone 6 front camera 2.65mm f/2.2")
    assert not same_device(iphone, front_camera)


def test_a_missing_lens_is_not_a_difference(iphone: Equipment) -> None:
    stripped = dataclasses.replace(iphone, lens=None)
    assert same_device(iphone, stripped)
    assert compare([_session(iphone)] * 3, _session(stripped))["status"] == "same"


# --- compare() -----------------------------------------------------------------------


def test_same_device(iphone: Equipment) -> None:
    assert compare([_session(iphone)] * 3, _session(iphone)) == {
        "changed": False,
        "angles": [],
        "from": iphone.to_json(),
        "to": iphone.to_json(),
        "status": "same",
    }


def test_one_angle_from_another_camera(iphone: Equipment, nokia: Equipment) -> None:
    current = _session(iphone) | {"left": nokia}
    result = compare([_session(iphone)] * 3, current)
    assert result == {
        "changed": True,
        "angles": ["left"],
        "from": iphone.to_json(),
        "to": nokia.to_json(),
        "status": "changed",
    }


def test_changed_angles_follow_contract_order(iphone: Equipment, nokia: Equipment) -> None:
    current = {"raised": nokia, "up": iphone, "left": nokia, "front": iphone}
    result = compare([_session(iphone)], current)
    assert result["angles"] == ["left", "raised"]
    assert result["from"] == iphone.to_json() and result["to"] == nokia.to_json()


def test_unknown_when_exif_is_missing(iphone: Equipment) -> None:
    unknown = {
        "changed": False,
        "angles": [],
        "from": None,
        "to": None,
        "status": "unknown",
    }
    png_only = _session(_read("camera/no_exif.jpg"))
    assert compare([_session(iphone)] * 3, png_only) == unknown
    assert compare([png_only] * 3, _session(iphone)) == unknown
    assert compare([], _session(iphone)) == unknown
    assert compare([], {}) == unknown


def test_unknown_current_angle_is_never_changed(iphone: Equipment, nokia: Equipment) -> None:
    current = _session(None) | {"front": iphone}
    history = [_session(nokia, ("left", "right")) | {"front": iphone}]
    result = compare(history, current)
    assert result["status"] == "same" and result["angles"] == []


def test_recent_device_is_the_most_common_of_the_last_three(
    iphone: Equipment, nokia: Equipment, canon: Equipment
) -> None:
    # Oldest first: the Canon session falls outside the last three with a known front.
    history = [
        _session(canon),
        _session(nokia),
        _session(None),
        _session(iphone),
        _session(nokia),
    ]
    assert recent_device(history, "front") == nokia
    result = compare(history, _session(canon))
    assert result["status"] == "changed" and result["angles"] == list(ANGLES)
    assert result["from"] == nokia.to_json() and result["to"] == canon.to_json()
    assert compare(history, _session(nokia))["status"] == "same"


def test_a_tie_goes_to_the_most_recent_device(iphone: Equipment, nokia: Equipment) -> None:
    assert recent_device([_session(nokia), _session(iphone)], "front") == iphone
    assert recent_device([_session(iphone), _session(nokia)], "front") == nokia


def test_angle_without_history_falls_back_to_other_angles(
    iphone: Equipment, nokia: Equipment
) -> None:
    history = [{"front": iphone, "left": None}] * 2
    assert compare(history, {"left": iphone})["status"] == "same"
    result = compare(history, {"left": nokia})
    assert result["angles"] == ["left"] and result["from"] == iphone.to_json()


# --- JSON round trip -----------------------------------------------------------------


def test_json_round_trip(iphone: Equipment, canon: Equipment) -> None:
    stored = to_json_map({"front": iphone, "left": None, "right": canon})
    assert stored == {"front": iphone.to_json(), "left": None, "right": canon.to_json()}
    assert set(iphone.to_json()) == {"make", "model", "lens", "width", "height"}
    assert {angle: from_json(d) for angle, d in stored.items()} == {
        "front": iphone,
        "left": None,
        "right": canon,
    }
    # compare() also takes the stored JSON directly, as read back from Postgres.
    assert compare([stored], {"front": canon.to_json()})["angles"] == ["front"]


@pytest.mark.parametrize(
    "stored",
    [None, "Apple", 3, [], {}, {"make": None, "model": "  "}, {"make": 5, "model": None}],
)
def test_from_json_without_a_device_is_none(stored: Any) -> None:
    assert from_json(stored) is None


def test_from_json_cleans_values() -> None:
    assert from_json({"make": " Apple ", "model": "iPhone 6", "width": "3264", "height": -1}) == (
        Equipment("Apple", "iPhone 6", None, None, None)
    )
