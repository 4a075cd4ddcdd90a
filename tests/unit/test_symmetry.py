"""Left/right symmetry as pure numbers: the distance, its baseline and floor."""

from __future__ import annotations

import numpy as np
import pytest

from changewatch.schema.symmetry import distance, symmetry


def test_distance_needs_both_sides() -> None:
    left, right = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert distance({"left": left, "right": right}) == pytest.approx(1.0)
    assert distance({"left": left, "right": left}) == pytest.approx(0.0)
    assert distance({"left": left, "front": right}) is None
    assert symmetry(None, [0.1, 0.2]) is None


def test_a_steady_person_has_a_floor_and_a_jump_stands_outside_it() -> None:
    rng = np.random.default_rng(0)
    earlier = list(0.10 + 0.002 * rng.normal(size=10))
    steady = symmetry(0.101, earlier)
    assert steady is not None and steady["baseline"] == pytest.approx(np.mean(earlier))
    assert steady["noise_floor"] is not None and steady["relative_change"] < 1
    moved = symmetry(0.14, earlier)
    assert moved is not None and moved["relative_change"] > 5
    first = symmetry(0.1, [])
    assert first is not None and first["baseline"] is None and first["noise_floor"] is None
