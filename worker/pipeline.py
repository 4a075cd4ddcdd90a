"""A session's stages in the order they run: fetch -> decode -> batch -> embed -> score
-> store. Each stage is timed into ``changewatch_stage_seconds`` under its name in
``metrics.STAGES`` and writes one JSON log line with the job's ids."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import numpy as np

from ..schema import results
from ..schema.contract import AnalyzeJob
from ..schema.status import Status
from ..schema.vectors import to_half
from . import metrics, score
from .decode import DRAFT_SIDE, Photo, decode_session
from .embed import Features
from .fetch import fetch_images
from .logs import job_event
from .resources import Resources
from .score import Analysis
from .store import outbox
from .store.analyses import Write, analysis_write, save_analysis
from .store.jobs import Superseded


def _log(stage: str, seconds: float) -> None:
    """One line per stage; the job's ids come bound by the task wrapper (logs.job_ids)."""
    job_event(f"{stage} done", event="stage", stage=stage, seconds=round(seconds, 4))


@contextmanager
def timed(stage: str) -> Iterator[None]:
    started = time.perf_counter()
    with metrics.stage(stage):
        yield
    _log(stage, time.perf_counter() - started)


def embed(res: Resources, photos: list[Photo]) -> Features:
    """One vector and nine region vectors per photo, from one forward pass each:
    micro-batched with other sessions (batch, then embed), or one forward pass per image
    in the reference pipeline (the seed's way, kept as the benchmark's and fidelity
    tests' yardstick)."""
    arrays = [p.pixels for p in photos]
    if res.settings.pipeline == "reference":
        with timed("embed"):
            each = [res.embedder.features(a[None], fp32=True) for a in arrays]
            vectors = np.concatenate([f.vectors for f in each])
            return _stored_as(res, Features(vectors, np.concatenate([f.regions for f in each])))
    embedded = res.batcher.embed_timed(np.stack(arrays))  # it times both into the histograms
    _log("batch", embedded.batch_seconds)
    _log("embed", embedded.embed_seconds)
    return _stored_as(res, Features(embedded.vectors, embedded.regions))


def _stored_as(res: Resources, features: Features) -> Features:
    """float16 storage: round here, so scores and sums use what is stored."""
    if res.settings.embedding_dtype != "float16":
        return features
    return Features(to_half(features.vectors), to_half(features.regions))


Vectors = dict[str, np.ndarray]


def embeddings(
    res: Resources, job: AnalyzeJob
) -> tuple[Vectors, dict[str, dict[str, Any]], Vectors]:
    """fetch -> decode -> batch -> embed: the job's embeddings by angle, what each photo
    says about itself (quality, camera), and each angle's (9, REGION_DIM) regions."""
    with timed("fetch"):
        images = fetch_images(res.s3, job, res.settings, res.fetch_pool)
    side = None if res.settings.pipeline == "reference" else DRAFT_SIDE
    with timed("decode"):
        photos = decode_session(images, job.images, side, res.settings.quality)
    out = embed(res, photos)
    facts = {angle: p.facts() for angle, p in zip(images, photos, strict=True)}
    regions = dict(zip(images, out.regions, strict=True))
    return dict(zip(images, out.vectors, strict=True)), facts, regions


def analyze(res: Resources, job: AnalyzeJob, request_seq: int) -> Analysis | Superseded:
    """The whole session, stage by stage: fetch -> decode -> batch -> embed, then score
    -> store in one transaction under the person's lock (``ModelNotActive`` when the
    model changed meanwhile)."""
    vectors, photos, regions = embeddings(res, job)
    with timed("store"), analysis_write(res.db, job, request_seq, res.model_id) as write:
        analysis = score_and_save(write, vectors, photos, regions)
        if isinstance(write, Write) and res.settings.notify_queue:
            _tell(res, write, res.settings.notify_queue)
        return analysis


def read_result(res: Resources, conn: Any, session_id: UUID) -> dict[str, Any] | None:
    """The session's result as ``producer result`` reads it, with this worker's settings."""
    return results.session_result(
        conn,
        session_id,
        fixed=res.settings.variation,
        trend_sessions=res.settings.trend_sessions,
    )


def _tell(res: Resources, write: Write, queue: str) -> None:
    """The request's notification, in the analysis's own transaction (the outbox): the
    result as ``producer result`` will read it once this commits."""
    t = write.target
    result = read_result(res, write.conn, t.session_id)
    ending = outbox.Ending(t.session_id, t.user_id, Status.SUCCEEDED, result=result)
    outbox.tell(write.conn, queue, ending, seq=t.request_seq)


def score_and_save(
    write: Write | Superseded,
    embeddings: Vectors,
    photos: dict[str, dict[str, Any]] | None = None,
    regions: Vectors | None = None,
) -> Analysis | Superseded:
    """score -> store inside an open analysis write: the session's analysis (its
    regions' scores included) and the later sessions it rescores."""
    if isinstance(write, Superseded):
        return write
    with timed("score"):
        scored = score.rescore(write.history, write.session(embeddings, regions))
    return save_analysis(write, scored, embeddings, photos)
