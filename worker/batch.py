"""Micro-batching: the images of several concurrent sessions share one forward pass.

Task threads call ``submit`` with one session's images and wait on a future; a single
thread gathers requests until ``max_batch`` images or ``max_wait_s`` have passed (like
Triton's dynamic batching), runs the model once and hands each session its rows back:
its embeddings and its region vectors, both from that one forward pass.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .embed import Embedder, Features

log = logging.getLogger(__name__)


@dataclass
class _Request:
    images: np.ndarray
    future: Future[Features] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)
    waited: float = 0.0  # seconds in the batch stage: queued until its forward pass began
    ran: float = 0.0  # seconds of the forward pass it shared (the embed stage)


@dataclass(frozen=True)
class Embedded:
    """One session's rows, and how long its batch and embed stages took."""

    vectors: np.ndarray
    regions: np.ndarray  # (rows, 9, REGION_DIM)
    batch_seconds: float
    embed_seconds: float


class MicroBatcher:
    def __init__(self, embedder: Embedder, max_batch: int = 32, max_wait_s: float = 0.005) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, images: np.ndarray) -> Future[Features]:
        return self._submit(images).future

    def _submit(self, images: np.ndarray) -> _Request:
        if self._thread is None:
            raise RuntimeError("MicroBatcher.start() has not run")
        request = _Request(images)
        self._requests.put(request)
        return request

    def embed(self, images: np.ndarray, timeout: float | None = 300) -> np.ndarray:
        return self.embed_timed(images, timeout).vectors

    def embed_timed(self, images: np.ndarray, timeout: float | None = 300) -> Embedded:
        request = self._submit(images)
        out = request.future.result(timeout=timeout)
        return Embedded(out.vectors, out.regions, request.waited, request.ran)

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, count = [first], len(first.images)
        deadline = time.perf_counter() + self.max_wait_s
        while count < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                request = (
                    self._requests.get(timeout=max(remaining, 0))
                    if remaining > 0
                    else (self._requests.get_nowait())
                )
            except queue.Empty:
                break
            if request is None:
                return batch, True
            batch.append(request)
            count += len(request.images)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._requests.get()
            if first is None:
                return
            batch, stopping = self._gather(first)
            started = time.perf_counter()
            try:
                out = self.embedder.features(np.concatenate([r.images for r in batch]))
            except Exception as exc:  # a failed forward pass fails exactly its sessions
                log.exception("forward pass of %d sessions failed", len(batch))
                for request in batch:
                    request.future.set_exception(exc)
                continue
            done = time.perf_counter()
            metrics.STAGE_SECONDS.labels("embed").observe(done - started)
            metrics.BATCH_IMAGES.observe(sum(len(r.images) for r in batch))
            metrics.BATCH_SESSIONS.observe(len(batch))
            offset = 0
            for request in batch:
                request.waited, request.ran = started - request.queued_at, done - started
                metrics.STAGE_SECONDS.labels("batch").observe(request.waited)
                rows = len(request.images)
                request.future.set_result(out.rows(offset, offset + rows))
                offset += rows
