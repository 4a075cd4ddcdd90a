"""A session's stages in the order they run: fetch -> decode -> batch -> embed -> score
-> store. Each stage is timed into ``changewatch_stage_seconds`` under its name in
``metrics.STAGES`` and writes one JSON log line with the job's ids."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg_pool import ConnectionPool

from ..schema.contract import AnalyzeJob
from ..schema.errors import JobError
from . import metrics, score, store
from .decode import DRAFT_SIDE, Photo, decode_photo
from .fetch import fetch_images
from .logs import job_event
from .resources import Resources
from .score import Analysis


@dataclass(frozen=True)
class Ids:
    """What every stage line of one job carries, so operators can grep one session."""

    task_id: str | None
    session_id: str

    def log(self, stage: str, seconds: float) -> None:
        job_event(
            f"{stage} done",
            event="stage",
            stage=stage,
            task_id=self.task_id,
            session_id=self.session_id,
            seconds=round(seconds, 4),
        )


@contextmanager
def timed(stage: str, ids: Ids) -> Iterator[None]:
    started = time.perf_counter()
    with metrics.stage(stage):
        yield
    ids.log(stage, time.perf_counter() - started)


def fetch(res: Resources, job: AnalyzeJob, ids: Ids) -> dict[str, bytes]:
    with timed("fetch", ids):
        return fetch_images(res.s3, job, res.settings, res.fetch_pool)


def decode(res: Resources, job: AnalyzeJob, images: dict[str, bytes], ids: Ids) -> list[Photo]:
    """Upright, equalized, cropped pixels per angle; a bad image names its angle and URI."""
    side = None if res.settings.pipeline == "reference" else DRAFT_SIDE
    photos = []
    with timed("decode", ids):
        for angle, data in images.items():
            try:
                photos.append(decode_photo(data, side, res.settings.quality))
            except JobError as err:
                raise JobError(err.code, f"image {angle!r} ({job.images[angle]}): {err}") from None
    return photos


def embed(res: Resources, photos: list[Photo], ids: Ids) -> np.ndarray:
    """One vector per photo: micro-batched with other sessions (batch, then embed), or
    one forward pass per image in the reference pipeline (the seed's way, kept as the
    benchmark's and fidelity tests' yardstick)."""
    arrays = [p.pixels for p in photos]
    if res.settings.pipeline == "reference":
        with timed("embed", ids):
            return np.concatenate([res.embedder.predict(a[None], fp32=True) for a in arrays])
    embedded = res.batcher.embed_timed(np.stack(arrays))  # it times both into the histograms
    ids.log("batch", embedded.batch_seconds)
    ids.log("embed", embedded.embed_seconds)
    return embedded.vectors


def embeddings(
    res: Resources, job: AnalyzeJob, ids: Ids
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """fetch -> decode -> batch -> embed: the job's embeddings by angle, and what each
    photo says about itself (quality, camera)."""
    images = fetch(res, job, ids)
    photos = decode(res, job, images, ids)
    vectors = embed(res, photos, ids)
    facts = {angle: p.facts() for angle, p in zip(images, photos, strict=True)}
    return dict(zip(images, vectors, strict=True)), facts


def score_and_store(
    db: ConnectionPool,
    job: AnalyzeJob,
    request_seq: int,
    model_id: str,
    embeddings: dict[str, np.ndarray],
    photos: dict[str, dict[str, Any]] | None = None,
    ids: Ids | None = None,
) -> Analysis | store.Superseded:
    """score -> store, in one transaction under the person's lock: the session's analysis
    and the later sessions it rescores. ``store.ModelNotActive`` when the model changed."""
    ids = ids or Ids(None, str(job.session_id))
    with timed("store", ids), store.analysis_write(db, job, request_seq, model_id) as write:
        if isinstance(write, store.Superseded):
            return write
        with timed("score", ids):
            scored = score.rescore(write.history, write.session(embeddings))
        return store.save_analysis(write, scored, embeddings, photos)
