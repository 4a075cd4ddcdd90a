"""The demo's run: its own stack up, every session sent and waited for, then torn down.

The producer and the worker are imported inside the steps, after ``configure_environment``,
so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import mimetypes
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.demo.config import (
    ANGLES,
    DEFAULT_BROKER_URL,
    HISTORY_PLOT,
    REPORT,
    SESSION_GAP,
    WORKER_LOG,
    DemoError,
    build_parser,
    configure_environment,
    one_line,
    redact,
    resolve_model,
    say,
)
from bench.demo.photos import Photo, folder_sessions, generated_sessions
from bench.demo.report import print_report
from bench.harness.services import ROOT, Worker


def _quietly(action: Callable[[], object], what: str) -> None:
    """Clean-up must not hide the error that caused it."""
    try:
        action()
    except Exception as exc:
        say(f"could not stop {what}: {one_line(exc)}")


def load_sessions(folder: Path | None) -> list[list[Photo]]:
    """The photos to send: the folder's (relative to where the command was typed), else
    the generated ones."""
    caller_dir = Path(os.environ.get("CHANGEWATCH_DEMO_CWD") or Path.cwd())
    if folder is not None:
        folder = (caller_dir / folder).resolve()
        sessions = folder_sessions(folder)
        say(f"photos: {sum(map(len, sessions))} from {folder}, {len(sessions)} session(s)")
    else:
        sessions = generated_sessions()
        say(f"photos: generated, {len(sessions)} sessions x {len(ANGLES)} angles (in memory)")
    if len(sessions) < 2:
        say("only one session: its change_score is 0.0 and there is nothing to compare")
    return sessions


def check_angles() -> None:
    from changewatch.schema.contract import ANGLES as CONTRACT_ANGLES

    if CONTRACT_ANGLES != ANGLES:
        raise DemoError(f"demo angles {ANGLES} differ from schema.contract's {CONTRACT_ANGLES}")


def prepare_database(database_url: str, fresh: bool) -> None:
    """The demo's database, created (or recreated with ``fresh``) and migrated."""
    import psycopg

    from bench.harness.services import recreate_database
    from changewatch.schema.migrate import ensure_database, migrate

    try:
        if fresh:
            recreate_database(database_url)
            say(f"database: recreated {redact(database_url)}")
        elif ensure_database(database_url):
            say(f"database: created {redact(database_url)}")
        applied = migrate(database_url)
    except psycopg.Error as exc:
        raise DemoError(f"PostgreSQL at {redact(database_url)}: {one_line(exc)}") from exc
    say(f"database: {redact(database_url)}, {len(applied)} migration(s) applied")


def check_broker(broker_url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(broker_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise DemoError(f"Redis at {redact(broker_url)}: {one_line(exc)}") from exc
    say(f"broker: {redact(broker_url)}, results: {redact(os.environ['CELERY_RESULT_BACKEND'])}")


def choose_model() -> tuple[str, str]:
    model, weights = resolve_model()
    if weights == "random":
        print(
            "NOTICE: CHANGEWATCH_MODEL_WEIGHTS=random: seeded random weights, for tests only;"
            " scores show the mechanics, not meaningful change.",
            flush=True,
        )
    say(f"model: {model}, weights: {weights}")
    return model, weights


def start_s3(cleanup: contextlib.ExitStack) -> bool:
    """The S3 server AWS_ENDPOINT_URL_S3 names, else moto's, started here; True if ours."""
    from bench.harness.services import S3Server

    if os.environ.get("AWS_ENDPOINT_URL_S3"):
        say(f"S3: {os.environ['AWS_ENDPOINT_URL_S3']} (from AWS_ENDPOINT_URL_S3)")
        return False
    server = S3Server()
    cleanup.callback(_quietly, server.stop, "the S3 server")  # also if start fails
    server.start()
    os.environ.update(server.env())
    say(f"S3: started moto's server at {server.endpoint}")
    return True


def open_bucket(bucket: str) -> Any:
    """An S3 client, with the bucket created unless it exists."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client("s3")
    try:
        ensure_bucket(s3, bucket, ClientError)
    except (BotoCoreError, ClientError) as exc:
        raise DemoError(f"S3 bucket {bucket}: {one_line(exc)}") from exc
    return s3


def purge_old_jobs(producer: Any, fresh: bool, own_s3: bool, broker_url: str) -> None:
    """Jobs left by an interrupted run point at an S3 server that is gone: drop them,
    but only from the demo's own Redis database unless --fresh asks for it."""
    if fresh or (own_s3 and broker_url == DEFAULT_BROKER_URL):
        purged = producer.celery.control.purge()
        say(f"queue: purged {purged} waiting message(s)")


def start_worker(cleanup: contextlib.ExitStack, model: str, weights: str, bucket: str) -> Worker:
    WORKER_LOG.parent.mkdir(parents=True, exist_ok=True)
    worker = Worker(
        env={
            "CHANGEWATCH_MODEL": model,
            "CHANGEWATCH_MODEL_WEIGHTS": weights,
            "CHANGEWATCH_ALLOWED_BUCKETS": bucket,
        },
        name=f"demo-{os.getpid()}",
        log_path=WORKER_LOG,
    )
    say(f"worker: starting (log: {WORKER_LOG.relative_to(ROOT)})")
    cleanup.callback(_quietly, worker.stop, "the worker")
    worker.start()
    return worker


def check_alive(worker: Worker) -> None:
    """A job whose worker died stays queued: say so at once."""
    code = worker.process.poll() if worker.process is not None else None
    if code is not None:
        raise DemoError(f"the worker exited with status {code}; see {WORKER_LOG}")


def analyze(
    args: argparse.Namespace,
    worker: Worker,
    producer: Any,
    s3: Any,
    sessions: Sequence[Sequence[Photo]],
    model: str,
    weights: str,
) -> None:
    """Once the worker is ready: its model made the active one, then every session sent."""
    from botocore.exceptions import ClientError

    try:
        worker.wait_ready(producer.celery, timeout=max(args.timeout, 180.0))
        say("worker: ready")
        use_model(producer, model, weights)
        send_sessions(
            producer,
            s3,
            args.bucket,
            sessions,
            args.timeout,
            ClientError,
            lambda: check_alive(worker),
            as_json=args.json,
        )
    except DemoError:
        raise
    except Exception as exc:
        raise DemoError(f"{one_line(exc)} (worker log: {WORKER_LOG})") from exc


def run(args: argparse.Namespace) -> None:
    """Set up the demo's stack, send the sessions, print what came back, tear it down."""
    sessions = load_sessions(args.folder)
    configure_environment()
    check_angles()
    database_url = os.environ["DATABASE_URL"]
    broker_url = os.environ["CELERY_BROKER_URL"]
    prepare_database(database_url, args.fresh)
    check_broker(broker_url)
    model, weights = choose_model()

    from changewatch.producer import Producer

    with contextlib.ExitStack() as cleanup:
        own_s3 = start_s3(cleanup)
        s3 = open_bucket(args.bucket)
        producer = Producer()
        purge_old_jobs(producer, args.fresh, own_s3, broker_url)
        worker = start_worker(cleanup, model, weights, args.bucket)
        analyze(args, worker, producer, s3, sessions, model, weights)
        say("stopping the worker" + (" and the S3 server" if own_s3 else ""))


def use_model(producer: Any, model: str, weights: str) -> None:
    """Make the demo worker's model the one results report in the demo's own database.

    The demo database keeps earlier runs, maybe of another model; this is the operator's
    `producer model activate --force`, Celery moving the jobs queue to the new worker.
    """
    from changewatch.producer import models
    from changewatch.worker.embed import model_id_for

    # The worker's precision names an INT8 model apart (CHANGEWATCH_PRECISION=int8).
    model_id = model_id_for(weights, model, os.environ.get("CHANGEWATCH_PRECISION", "auto"))
    with producer.connect() as conn:
        row = conn.execute("SELECT model_id FROM models WHERE active").fetchone()
    if row is None or row["model_id"] != model_id:
        models.activate(producer, model_id, force=True)
        say(f"model: {model_id} now reports results in the demo database")


def ensure_bucket(s3: Any, bucket: str, client_error: type[Exception]) -> None:
    """Create the bucket unless it exists (a real MinIO may already have it)."""
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except client_error as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))  # type: ignore[attr-defined]
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    region = s3.meta.region_name
    if region and region != "us-east-1":
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    else:
        s3.create_bucket(Bucket=bucket)
    say(f"S3: created bucket {bucket}")


def wait_while(
    alive: Callable[[], None], wait: Callable[[float], dict[str, Any]], timeout: float, what: str
) -> dict[str, Any]:
    """Wait in short slices, checking the worker between them.

    A job whose worker died stays queued; this ends the demo at once instead of at
    the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive()
        remaining = deadline - time.monotonic()
        try:
            return wait(max(min(remaining, 2.0), 0.0))
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} not finished after {timeout:g}s") from None


def upload_session(
    s3: Any,
    bucket: str,
    prefix: str,
    photos: Sequence[Photo],
    client_error: type[Exception],
) -> dict[str, str]:
    """Each photo under ``prefix/ANGLE.SUFFIX``: angle -> s3:// URI."""
    images: dict[str, str] = {}
    for photo in photos:
        key = f"{prefix}/{photo.angle}{photo.suffix}"
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=photo.data, ContentType=content_type)
        except client_error as exc:
            raise DemoError(f"upload of s3://{bucket}/{key}: {one_line(exc)}") from exc
        images[photo.angle] = f"s3://{bucket}/{key}"
    return images


def compare_ends(
    producer: Any,
    user_id: uuid.UUID,
    session_ids: Sequence[uuid.UUID],
    worker_alive: Callable[[], None],
    timeout: float,
) -> list[tuple[int, int, dict[str, Any]]]:
    """The last session compared with the first, and the one before it (a re-take in the
    generated series) too, if there are three: (current, previous, result), 1-based."""
    pairs = [(len(session_ids), 1)] if len(session_ids) >= 2 else []
    if len(session_ids) >= 3:
        pairs.append((len(session_ids) - 1, 1))
    out = []
    for current, previous in pairs:
        cur, prev = session_ids[current - 1], session_ids[previous - 1]
        producer.compare(user_id, cur, prev)
        result = wait_while(
            worker_alive,
            lambda t, c=cur, p=prev: producer.wait_comparison(c, p, t),
            timeout,
            f"the comparison of session {current} with session {previous}",
        )
        out.append((current, previous, result))
    return out


def send_sessions(
    producer: Any,
    s3: Any,
    bucket: str,
    sessions: Sequence[Sequence[Photo]],
    timeout: float,
    client_error: type[Exception],
    worker_alive: Callable[[], None],
    as_json: bool = False,
) -> None:
    """Upload, enqueue and wait for every session, then compare the last with the first.

    A new user id per run: the demo database keeps earlier runs, and a new person's
    first session is the one with no history (change_score 0.0).
    """
    user_id = uuid.uuid4()
    now = datetime.now(UTC).replace(microsecond=0)
    first_at = now - SESSION_GAP * (len(sessions) - 1)
    session_ids = [uuid.uuid4() for _ in sessions]
    say(f"user: {user_id}")
    for index, (session_id, photos) in enumerate(zip(session_ids, sessions, strict=True)):
        images = upload_session(s3, bucket, f"{user_id}/{session_id}", photos, client_error)
        producer.analyze(user_id, session_id, first_at + SESSION_GAP * index, images)
        say(f"session {index + 1}: {len(images)} photos uploaded, job queued")
    for index, session_id in enumerate(session_ids):
        wait_while(
            worker_alive,
            lambda t, s=session_id: producer.wait(s, t),
            timeout,
            f"session {index + 1} ({session_id})",
        )
        say(f"session {index + 1}: analyzed")
    from changewatch.producer import history, report

    # Read back after all finished: each write rescores the history, so these are final.
    sessions_out = producer.history(user_id)
    comparisons = compare_ends(producer, user_id, session_ids, worker_alive, timeout)
    plot = history.plot(sessions_out, HISTORY_PLOT, "changewatch demo: change over time")
    page = report.write(producer, user_id, REPORT, s3)
    print_report(sessions_out, comparisons, {"plot": plot, "report": page}, as_json)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every session was analyzed and compared; else 1 with a one-line reason."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"demo failed: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0
