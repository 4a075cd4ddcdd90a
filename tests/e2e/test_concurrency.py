"""Two real workers, one user's sessions in random order at once: same numbers as in order."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from bench.harness.services import ROOT, Worker, free_port
from changewatch.producer import Producer
from tests.helpers import SERIES, T0, Uploader, scores_of


@pytest.fixture(scope="module")
def second_worker(worker: Worker, producer: Producer) -> Iterator[Worker]:
    env = {**worker.env, "CHANGEWATCH_METRICS_PORT": str(free_port())}
    log = ROOT / "artifacts" / "worker2.log"
    log.unlink(missing_ok=True)
    other = Worker(env=env, name="pytest-second", log_path=log)
    other.start()
    try:
        other.wait_ready(producer.celery)
        yield other
    finally:
        other.stop()


def _sessions(photos: Path) -> list[dict[str, Path]]:
    series = [photos / "series" / n for n in SERIES]
    return [
        {a: series[(i + j) % len(series)] for j, a in enumerate(("front", "left", "right"))}
        for i in range(6)
    ]


def test_concurrent_out_of_order_equals_sequential_in_order(
    second_worker: Worker, photos: Path, uploader: Uploader, producer: Producer
) -> None:
    """Baselines and scores do not depend on which worker ran what, or when."""
    files = _sessions(photos)
    times = [T0 + timedelta(weeks=2 * i) for i in range(len(files))]

    in_order_user = uuid.uuid4()
    in_order = [uuid.uuid4() for _ in files]
    for sid, at, f in zip(in_order, times, files, strict=True):
        producer.analyze(in_order_user, sid, at, uploader.session(in_order_user, f))
        producer.wait(sid, timeout=240)

    user = uuid.uuid4()
    ids = [uuid.uuid4() for _ in files]
    uploads = [uploader.session(user, f) for f in files]
    order = list(range(len(files)))
    random.Random(11).shuffle(order)
    for i in order:
        producer.analyze(user, ids[i], times[i], uploads[i])
    # Re-analysis of an early session while later ones are in flight.
    producer.analyze(user, ids[1], times[1], uploads[1])
    for sid in ids:
        producer.wait(sid, timeout=240)

    expected, got = (
        scores_of(producer, dict(enumerate(in_order))),
        scores_of(producer, dict(enumerate(ids))),
    )
    for (a, na, pa), (b, nb, pb) in zip(expected, got, strict=True):
        assert na == nb and a == pytest.approx(b, abs=1e-6) and pa == pytest.approx(pb, abs=1e-6)

    with psycopg.connect(producer.dsn) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM angle_embeddings WHERE session_id = ANY(%s)", (ids,)
        ).fetchone()
    assert rows == (3 * len(ids),)
    # Both workers took part.
    log = (ROOT / "artifacts" / "worker2.log").read_text()
    assert "changewatch.analyze_session" in log and "succeeded" in log
