"""Region maps on real photos: does a change confined to one region of one angle stand
out in that region, and does a re-take stay inside every region's floor?

Built like the angles' validity bench (bench/validity): one person's eight re-take
sessions of six series/ photos, then new sessions scored on them with the product's own
scoring (``analyze_history``) and evidence (``evidence.annotate``):

- a region change: one grid cell of one angle's re-take (the cell of the upright,
  centre-cropped square the model sees) replaced by the same cell of a photo the history
  never used, pasted after the re-framing so it is confined to that cell;
- re-takes: new sessions of re-takes, nothing changed.

Each case is scored twice: with the 128-d projected region vectors the product stores,
and with the full-width pooled features (1280-d for Lite0) before projection, so the
table shows what the projection keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any
from uuid import UUID

import numpy as np
import torch
from PIL import Image

from bench.validity import (
    ANGLE_PHOTOS,
    HISTORY_SESSIONS,
    T0,
    UNUSED_PHOTOS,
    Scene,
    draw_retake,
    retake,
)
from changewatch.schema.evidence import annotate
from changewatch.schema.regions import REGIONS
from changewatch.worker.decode import preprocess
from changewatch.worker.embed import Embedder
from changewatch.worker.regions import GRID, pool_regions, project, projection
from changewatch.worker.score import StoredSession, analyze_history

# What the done-when asks of a region change and of a re-take.
CHANGE_AT_LEAST = 3.0
RETAKE_AT_MOST = 2.0


def cell_box(size: tuple[int, int], index: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of region ``index`` (row-major) in a photo of ``size``:
    a third of the centre square the model sees (worker.decode's crop)."""
    width, height = size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    row, col = divmod(index, GRID)
    return (
        left + col * side // GRID,
        top + row * side // GRID,
        left + (col + 1) * side // GRID,
        top + (row + 1) * side // GRID,
    )


def replace_region(image: Image.Image, donor: Image.Image, index: int) -> Image.Image:
    """``image`` with region ``index`` replaced by the same region of ``donor``."""
    box = cell_box(image.size, index)
    patch = donor.convert("RGB").crop(cell_box(donor.size, index))
    out = image.copy()
    out.paste(patch.resize((box[2] - box[0], box[3] - box[1])), box[:2])
    return out


# The product's regions (the stride-16 map, as stored), and the last (7x7) map's regions
# at full width and projected to 128: what the map and the projection each change.
KINDS = ("product", "last_full", "last_projected")


def _pooled(maps: Sequence[np.ndarray]) -> np.ndarray:
    return pool_regions(torch.from_numpy(np.concatenate(maps))).numpy()


def features(embedder: Embedder, photos: Sequence[bytes]) -> list[dict[str, np.ndarray]]:
    """Per photo: the angle embedding and the regions of every kind."""
    batch = np.stack([preprocess(p) for p in photos])
    maps = [embedder.feature_maps(batch[i : i + 16]) for i in range(0, len(batch), 16)]
    middle, last = _pooled([m[0] for m in maps]), _pooled([m[1] for m in maps])
    vectors = np.concatenate([m[1] for m in maps]).mean(axis=(2, 3))
    return [
        {"vector": v, "product": project(m), "last_full": f, "last_projected": projection_of(f)}
        for v, m, f in zip(vectors, middle, last, strict=True)
    ]


def projection_of(regions: np.ndarray) -> np.ndarray:
    """(9, C) -> (9, 128) by the product's fixed projection, whatever C."""
    return regions.astype(np.float32) @ projection(regions.shape[-1])


Embedded = dict[str, dict[str, np.ndarray]]  # angle -> vector, projected, full


def _sessions(embedded: Sequence[Embedded], kind: str, start: int = 0) -> list[StoredSession]:
    return [
        StoredSession(
            UUID(int=start + i + 1),
            T0 + timedelta(days=7 * (start + i)),
            {a: f["vector"] for a, f in angles.items()},
            regions={a: f[kind] for a, f in angles.items()},
        )
        for i, angles in enumerate(embedded)
    ]


def region_result(history: Sequence[Embedded], current: Embedded, kind: str) -> dict[str, Any]:
    """The product's result for ``current`` after ``history``, regions of ``kind``."""
    sessions = [*_sessions(history, kind), *_sessions([current], kind, start=len(history))]
    at = {s.session_id: s.captured_at for s in sessions}
    analyses = [{**asdict(a), "captured_at": at[a.session_id]} for a in analyze_history(sessions)]
    return annotate(analyses[-1], earlier=analyses[:-1], photos=None, equipment={})


def _embed_sessions(embedder: Embedder, sessions: Sequence[dict[str, bytes]]) -> list[Embedded]:
    keys = [(i, a) for i, s in enumerate(sessions) for a in s]
    found = features(embedder, [sessions[i][a] for i, a in keys])
    out: list[Embedded] = [{} for _ in sessions]
    for (i, angle), item in zip(keys, found, strict=True):
        out[i][angle] = item
    return out


def _row(result: dict[str, Any], angle: str) -> list[dict[str, Any]]:
    return next(r for r in result["per_angle"] if r["angle"] == angle)["regions"]


def run_regions_seed(
    embedder: Embedder, scenes: dict[str, Scene], seed: int, retakes: int
) -> dict[str, Any]:
    """One person's history, ``retakes`` re-take sessions, and every (angle, region)
    change of the first of them (the donor photo rotates over the unused ones)."""
    rng = np.random.default_rng(1000 + seed)
    history_bytes = [
        {a: retake(scenes[n], draw_retake(rng)) for a, n in ANGLE_PHOTOS.items()}
        for _ in range(HISTORY_SESSIONS)
    ]
    history = _embed_sessions(embedder, history_bytes)
    takes = [{a: draw_retake(rng) for a in ANGLE_PHOTOS} for _ in range(retakes)]
    new = [{a: retake(scenes[ANGLE_PHOTOS[a]], t[a]) for a in ANGLE_PHOTOS} for t in takes]
    new_embedded = _embed_sessions(embedder, new)
    out: dict[str, Any] = {"retakes": {k: [] for k in KINDS}, "changes": []}
    for kind in KINDS:
        for current in new_embedded:
            result = region_result(history, current, kind)
            out["retakes"][kind].append(
                {a: max(r["relative_change"] for r in _row(result, a)) for a in ANGLE_PHOTOS}
            )
    cases = []
    for k, (angle, index) in enumerate((a, i) for a in ANGLE_PHOTOS for i in range(9)):
        donor = scenes[UNUSED_PHOTOS[k % len(UNUSED_PHOTOS)]].image
        scene = scenes[ANGLE_PHOTOS[angle]]
        photo = retake(
            scene, takes[0][angle], lambda im, d=donor, i=index: replace_region(im, d, i)
        )
        cases.append((angle, index, photo))
    changed = features(embedder, [c[2] for c in cases])
    for (angle, index, _), item in zip(cases, changed, strict=True):
        row: dict[str, Any] = {"angle": angle, "region": REGIONS[index]}
        for kind in KINDS:
            result = region_result(history, {**new_embedded[0], angle: item}, kind)
            regions = _row(result, angle)
            relatives = [r["relative_change"] for r in regions]
            row[kind] = {
                "relative": relatives[index],
                "score": regions[index]["change_score"],
                "first": int(np.argmax(relatives)) == index,
                "runner_up": max(r for i, r in enumerate(relatives) if i != index),
                "angle_relative": next(
                    r["relative_change"] for r in result["per_angle"] if r["angle"] == angle
                ),
            }
        out["changes"].append(row)
    return out


def summarize_regions(seeds: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The done-when figures per kind (KINDS)."""
    summary = {}
    for kind in KINDS:
        changes = [c[kind] for s in seeds for c in s["changes"]]
        retake_angles = [
            m for s in seeds for session in s["retakes"][kind] for m in session.values()
        ]
        retake_sessions = [max(session.values()) for s in seeds for session in s["retakes"][kind]]
        relatives = [c["relative"] for c in changes]
        summary[kind] = {
            "change_cases": len(changes),
            "first": float(np.mean([c["first"] for c in changes])),
            "at_least": float(np.mean([c["relative"] >= CHANGE_AT_LEAST for c in changes])),
            "both": float(
                np.mean([c["first"] and c["relative"] >= CHANGE_AT_LEAST for c in changes])
            ),
            "change_median": float(np.median(relatives)),
            "change_p10": float(np.percentile(relatives, 10)),
            "angle_median": float(np.median([c["angle_relative"] for c in changes])),
            "retake_angles": len(retake_angles),
            "retake_inside": float(np.mean([m <= RETAKE_AT_MOST for m in retake_angles])),
            "retake_max_median": float(np.median(retake_angles)),
            "retake_max": float(np.max(retake_angles)),
            "retake_sessions": len(retake_sessions),
            "retake_sessions_inside": float(
                np.mean([m <= RETAKE_AT_MOST for m in retake_sessions])
            ),
        }
    scores = [
        (c["last_projected"]["score"], c["last_full"]["score"]) for s in seeds for c in s["changes"]
    ]
    ratio = [p / f for p, f in scores if f > 0]
    summary["projection"] = {
        "score_ratio_median": float(np.median(ratio)),
        "score_ratio_p05": float(np.percentile(ratio, 5)),
        "score_ratio_p95": float(np.percentile(ratio, 95)),
        "score_correlation": float(np.corrcoef(np.array(scores).T)[0, 1]),
    }
    return summary
