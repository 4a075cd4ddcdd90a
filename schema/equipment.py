"""Whether a session's cameras differ from the person's usual ones: the rule results apply.

Why: a session photographed with another phone or camera (or another lens of the same
phone) differs from the person's history for reasons that have nothing to do with the
person. Reporting the equipment next to the score lets a reader see that cause instead of
guessing at it. The worker reads each photo's camera from its EXIF (``worker.equipment``)
and stores it; results compare it here, so readers need no image library. Photos without
a make or model are "unknown", never "changed": missing metadata is not evidence of a
new device. Dimensions are reported, never compared.

What counts as the same device: see :func:`device_key` and :func:`same_device`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .contract import ANGLES

# How many earlier sessions with a known device define the person's recent device.
RECENT_SESSIONS = 3
# Generous for any real make, model or lens name; longer values are damaged metadata and
# are cut so that they cannot bloat the stored JSON.
MAX_TEXT = 128


@dataclass(frozen=True)
class Equipment:
    """The capture device of one photo, as its EXIF describes it."""

    make: str | None
    model: str | None
    lens: str | None
    width: int | None
    height: int | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with keys make, model, lens, width, height."""
        return asdict(self)


def _text(value: Any) -> str | None:
    """A clean tag string: decoded, cut at the first NUL, control characters dropped."""
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value = raw.decode("latin-1")
    if not isinstance(value, str):
        return None
    # Leading NULs are padding; anything after a NUL inside the text is leftover buffer.
    value = value.lstrip("\x00").split("\x00", 1)[0]
    value = "".join(ch if ch.isprintable() else " " for ch in value).strip()
    return value[:MAX_TEXT].strip() or None


def _dimension(value: Any) -> int | None:
    """A positive pixel count, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value > 0 else None


def _normal(value: str | None) -> str:
    return " ".join(value.split()).casefold() if value else ""


def device_key(e: Equipment) -> tuple[str, str, str]:
    """(make, model, lens), case-folded and whitespace-collapsed; '' for a missing field.

    Pixel dimensions are not part of the key: one device writes many sizes (portrait or
    landscape, its own resolution or aspect setting, an in-app crop), so a size difference
    alone says nothing about the camera. The lens is part of it: a phone's front and back
    cameras, or the wide and telephoto modules, are different sensors and optics.
    """
    return (_normal(e.make), _normal(e.model), _normal(e.lens))


def same_device(a: Equipment, b: Equipment) -> bool:
    """Whether two photos come from the same device.

    Every field of :func:`device_key` that both photos name must match; a field that one
    photo does not name (an app that drops the lens tag, say) is not evidence of a
    difference. Dimensions are ignored.
    """
    return all(x == y for x, y in zip(device_key(a), device_key(b), strict=True) if x and y)


def from_json(d: Any) -> Equipment | None:
    """An :class:`Equipment` from its stored JSON; None for null, non-objects or no make/model."""
    if isinstance(d, Equipment):
        return d
    if not isinstance(d, Mapping):
        return None
    make, model = _text(d.get("make")), _text(d.get("model"))
    if make is None and model is None:
        return None
    return Equipment(
        make, model, _text(d.get("lens")), _dimension(d.get("width")), _dimension(d.get("height"))
    )


def to_json_map(
    equipment_by_angle: Mapping[str, Equipment | None],
) -> dict[str, dict[str, Any] | None]:
    """Angle -> ``Equipment.to_json()`` or None, ready to store as JSON."""
    return {
        angle: (e.to_json() if e is not None else None) for angle, e in equipment_by_angle.items()
    }


def _known(session: Mapping[str, Any]) -> dict[str, Equipment]:
    """The angles of one session whose device is known (values may be stored JSON dicts)."""
    known: dict[str, Equipment] = {}
    if not isinstance(session, Mapping):
        return known
    for angle, value in session.items():
        e = from_json(value)
        if e is not None:
            known[angle] = e
    return known


def _most_common(devices: Sequence[Equipment]) -> Equipment | None:
    """The most frequent device (by key); a tie goes to the most recently seen one.

    ``devices`` are in time order, oldest first; the representative returned is the
    latest photo of the winning device.
    """
    if not devices:
        return None
    counts = Counter(device_key(e) for e in devices)
    latest: dict[tuple[str, str, str], tuple[int, Equipment]] = {}
    for position, e in enumerate(devices):
        latest[device_key(e)] = (position, e)
    best = max(counts, key=lambda key: (counts[key], latest[key][0]))
    return latest[best][1]


def recent_device(
    history: Sequence[Mapping[str, Any]], angle: str, sessions: int = RECENT_SESSIONS
) -> Equipment | None:
    """The person's recent device for ``angle``.

    The most common known device over the last ``sessions`` earlier sessions that have a
    known device for that angle; when none has, over every angle of the last ``sessions``
    sessions that have any known device. ``history`` is oldest first.
    """
    known = [_known(session) for session in history]
    for_angle = [k[angle] for k in known if angle in k][-sessions:]
    if for_angle:
        return _most_common(for_angle)
    pooled = [k[a] for k in [k for k in known if k][-sessions:] for a in _ordered(k)]
    return _most_common(pooled)


def _ordered(angles: Iterable[str]) -> list[str]:
    """The contract's angle order, then any other angle in the order given."""
    given = list(angles)
    return [a for a in ANGLES if a in given] + [a for a in given if a not in ANGLES]


def compare(
    history: Sequence[Mapping[str, Any]],
    current: Mapping[str, Any],
    sessions: int = RECENT_SESSIONS,
) -> dict[str, Any]:
    """Whether this session's devices differ from the person's recent ones, per angle.

    ``history`` is the person's earlier sessions, oldest first, each angle -> Equipment
    (or its stored JSON) or None; ``current`` is this session's mapping. An angle is only
    compared when both its current photo and its recent device are known. ``from``/``to``
    describe the first differing angle in contract order (when ``changed``) or the first
    compared angle (when ``same``). With no comparable angle the status is ``unknown``.
    """
    current_known = _known(current)
    changed: list[str] = []
    first_pair: tuple[Equipment, Equipment] | None = None
    changed_pair: tuple[Equipment, Equipment] | None = None
    for angle in _ordered(current_known):
        now = current_known[angle]
        usual = recent_device(history, angle, sessions)
        if usual is None:
            continue
        if first_pair is None:
            first_pair = (usual, now)
        if not same_device(usual, now):
            changed.append(angle)
            if changed_pair is None:
                changed_pair = (usual, now)
    pair = changed_pair or first_pair
    if pair is None:
        return {"changed": False, "angles": [], "from": None, "to": None, "status": "unknown"}
    return {
        "changed": bool(changed),
        "angles": changed,
        "from": pair[0].to_json(),
        "to": pair[1].to_json(),
        "status": "changed" if changed else "same",
    }
