"""A model change, as an operator does it: two models' workers on one queue, a backfill
interrupted once and resumed, the switch, and the way back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from bench.harness.services import ROOT, Worker, free_port
from changewatch.producer import Producer
from changewatch.schema.contract import QUEUE
from tests.helpers import ARTIFACTS, T0, Uploader, run_module, six

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second ResNet50 (random, another seed) saved as a weights file: a new model id."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet50-seed1.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


def active(producer: Producer) -> str:
    with psycopg.connect(producer.dsn) as conn:
        row = conn.execute("SELECT model_id FROM models WHERE active").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def second_model(
    worker: Worker, producer: Producer, other_weights: Path
) -> Iterator[tuple[Worker, str]]:
    """A worker of another model beside the suite's; afterwards the suite's model is
    active again and its worker consumes the jobs queue, whatever the test did."""
    original = active(producer)
    log = ARTIFACTS / "worker-model2.log"
    log.unlink(missing_ok=True)
    env = {
        **worker.env,
        "CHANGEWATCH_MODEL_WEIGHTS": str(other_weights),
        "CHANGEWATCH_METRICS_PORT": str(free_port()),
    }
    other = Worker(env=env, name="pytest-model2", log_path=log).start()
    try:
        other.wait_ready(producer.celery)
        with psycopg.connect(producer.dsn) as conn:
            row = conn.execute(
                "SELECT model_id FROM models WHERE model_id <> %s ORDER BY registered_at DESC",
                (original,),
            ).fetchone()
        assert row is not None
        yield other, str(row[0])
    finally:
        other.stop()
        with psycopg.connect(producer.dsn) as conn:
            conn.execute("UPDATE models SET active = false WHERE model_id <> %s", (original,))
            conn.execute("UPDATE models SET active = true WHERE model_id = %s", (original,))
        producer.celery.control.add_consumer(QUEUE, reply=True, timeout=5)


def cli(*args: str) -> tuple[int, dict]:
    """``python -m changewatch.producer ARGS``: exit code, and the JSON out (or the stderr line)."""
    proc = run_module("changewatch.producer", *args, timeout=600)
    if proc.stdout.strip():
        return proc.returncode, json.loads(proc.stdout)
    return proc.returncode, {"stderr": proc.stderr}


def backfill_interrupted_once(producer: Producer, model: str, user: uuid.UUID) -> None:
    """Start `backfill --wait`, Ctrl+C it after the first session is done, run it again."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "changewatch.producer",
            "backfill",
            "--user-id",
            str(user),
            "--wait",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    with psycopg.connect(producer.dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute(
                "SELECT count(*) FROM analyses WHERE model_id = %s AND user_id = %s",
                (model, user),
            ).fetchone()
            if done and done[0] >= 1:
                break
            time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert out.strip(), err
    first = json.loads(out)
    assert first["model_id"] == model and first["enqueued"] == first["pending"]
    code, second = cli("backfill", "--user-id", str(user), "--wait")
    assert code == 0, second
    assert second["failed"] == 0 and second["unfinished"] == 0
    assert second["enqueued"] == 0  # nothing sent twice: the rest was still in flight


def test_a_model_rollout_with_backfill_and_back(
    second_model: tuple[Worker, str],
    photos: Path,
    uploader: Uploader,
    producer: Producer,
    s3: object,
) -> None:
    _, new_model = second_model
    old_model = active(producer)
    user = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(5)]
    for i, sid in enumerate(ids[:4]):
        producer.analyze(
            user, sid, T0 + timedelta(days=14 * i), uploader.session(user, six(photos, i))
        )
    for sid in ids[:4]:
        producer.wait(sid, timeout=240)

    # Two models' workers on one queue: the inactive one takes no analyze job, so the
    # active history stays whole.
    producer.analyze(user, ids[4], T0 + timedelta(days=56), uploader.session(user, six(photos, 4)))
    fifth = producer.wait(ids[4], timeout=240)
    assert fifth["model_id"] == old_model and fifth["baseline_session_count"] == 4
    assert "Task changewatch.analyze_session[" not in (ARTIFACTS / "worker-model2.log").read_text()

    code, refused = cli("model", "activate", new_model)
    assert code == 2 and "backfill_incomplete" in refused["stderr"]  # backfill first

    backfill_interrupted_once(producer, new_model, user)
    with psycopg.connect(producer.dsn) as conn:
        rows = conn.execute(
            "SELECT b.attempts, a.request_seq = s.good_request_seq"
            "  FROM sessions s JOIN backfill_jobs b USING (session_id)"
            "  JOIN analyses a ON a.session_id = s.session_id AND a.model_id = b.model_id"
            " WHERE s.user_id = %s AND b.model_id = %s",
            (user, new_model),
        ).fetchall()
    assert rows == [(1, True)] * 5  # every session re-embedded, none twice

    # Other tests' people share this database and were not backfilled: --force switches
    # anyway (this person's history is whole under the new model, checked above).
    code, switched = cli("model", "activate", new_model, "--force")
    assert code == 0 and switched["previous"] == old_model
    assert [w.split("@")[0] for w in switched["jobs_queue_consumers_added"]] == ["pytest-model2"]
    assert "pytest" in [w.split("@")[0] for w in switched["jobs_queue_consumers_removed"]]
    older = producer.result(ids[0])
    assert older["model_id"] == new_model and older["embedding_dim"] == 2048

    sixth = uuid.uuid4()
    sixth_images = uploader.session(user, six(photos, 5))
    producer.analyze(user, sixth, T0 + timedelta(days=70), sixth_images)
    result = producer.wait(sixth, timeout=240)
    assert result["model_id"] == new_model
    assert result["is_first_session"] is False and result["baseline_session_count"] == 5

    # And back: the old model lacks the sixth session until it is backfilled. Its photo
    # is missing at first: that session fails with its own error, then succeeds.
    code, refused = cli("model", "activate", old_model)
    assert code == 2 and "backfill_incomplete" in refused["stderr"]
    bucket, key = sixth_images["front"].removeprefix("s3://").split("/", 1)
    photo = s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
    s3.delete_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    code, back = cli("backfill", "--model", old_model, "--user-id", str(user), "--wait")
    assert code == 1 and back["failed"] == 1 and back["errors"][0]["code"] == "image_missing"
    s3.put_object(Bucket=bucket, Key=key, Body=photo)  # type: ignore[attr-defined]
    code, back = cli("backfill", "--model", old_model, "--user-id", str(user), "--wait")
    assert code == 0 and back["pending"] == 1 and back["succeeded"] == 1
    code, _ = cli("model", "activate", old_model)
    assert code == 0 and producer.result(sixth)["model_id"] == old_model
