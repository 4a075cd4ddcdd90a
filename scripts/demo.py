"""changewatch's demo: one person's photo sessions through the real pipeline, end to end.

It takes the same path a production job takes: photos uploaded to S3, jobs enqueued
with the producer, a real Celery worker embedding them with ResNet50, results read back
from Postgres. By default it uses its own database, its own Redis databases and
(unless AWS_ENDPOINT_URL_S3 names one) its own S3 server, so it touches no other data.
It reports how much each session differs from the earlier ones, in neutral words; it
never says what a change means.

Run it through ``scripts/demo.sh [PHOTO_FOLDER]``, which installs and starts services first.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import mimetypes
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/changewatch_demo"
# Not the app's defaults (0/1) nor the tests' (14/15): the demo never eats their messages.
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/2"
DEFAULT_RESULT_BACKEND = "redis://127.0.0.1:6379/3"
DEFAULT_BUCKET = "changewatch-demo"
# The same order as schema.contract.ANGLES; copied so argparse runs before any import
# that could read celeryconfig.
ANGLES: tuple[str, ...] = ("front", "left", "right", "up", "down", "raised")
MIN_IMAGES = 3
GENERATED_SESSIONS = 7
SESSION_GAP = timedelta(weeks=3)
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".tif", ".tiff"})
WIDTH, HEIGHT = 640, 480
ROOT = Path(__file__).resolve().parent.parent
WORKER_LOG = ROOT / "artifacts" / "demo-worker.log"
HISTORY_PLOT = ROOT / "artifacts" / "demo-history.png"


class DemoError(RuntimeError):
    """A reason the demo cannot go on, already phrased for the person running it."""


@dataclass(frozen=True)
class Photo:
    """One image to upload: its angle, its bytes and where it came from (for the table)."""

    angle: str
    data: bytes
    suffix: str
    source: str


# -- configuration -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.sh",
        description="Run photo sessions of one person through changewatch and print how "
        "much each one differs from the earlier ones.",
    )
    parser.add_argument(
        "folder",
        nargs="?",
        type=Path,
        help="photos to use (jpg, jpeg, png, heic, heif, webp, tif), grouped in name order "
        "into sessions of up to 6 angles; default: generated photos of a made-up person",
    )
    parser.add_argument(
        "--bucket", default=DEFAULT_BUCKET, help=f"S3 bucket (default {DEFAULT_BUCKET})"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="drop and recreate the demo database and purge the demo queue first",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for each job (default 300)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


def configure_environment() -> None:
    """Point the producer and the worker at the demo's own database and Redis databases.

    Must run before anything imports celeryconfig or worker.settings: they read these
    variables at import time.
    """
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    os.environ.setdefault("CELERY_RESULT_BACKEND", DEFAULT_RESULT_BACKEND)


def resolve_model() -> tuple[str, str]:
    """The worker's (model, weights): the configured ones, else ImageNet ResNet50 when its
    weights are cached, else the ImageNet EfficientNet-Lite0 that ships in a package.

    Without internet, torchvision cannot download ResNet50's weights; the embedded model
    is real and trained, so the demo's scores still mean something. Random weights are
    used only when CHANGEWATCH_MODEL_WEIGHTS=random asks for them (tests).
    """
    model = os.environ.get("CHANGEWATCH_MODEL", "").strip().lower()
    configured = os.environ.get("CHANGEWATCH_MODEL_WEIGHTS", "").strip()
    # Checked here: a worker given a missing file still answers pings, then fails jobs.
    path = Path(configured).expanduser()
    if configured not in ("", "imagenet", "random") and not path.is_file():
        raise DemoError(
            f"CHANGEWATCH_MODEL_WEIGHTS={configured!r} is neither 'imagenet', 'random' "
            "nor an existing weights file"
        )
    if model:
        return model, configured or "imagenet"
    if configured == "random":
        return "resnet50", "random"
    if configured and configured != "imagenet":
        return "resnet50", configured
    if imagenet_cached():
        return "resnet50", "imagenet"
    return "efficientnet_lite0", "imagenet"


def imagenet_cached() -> bool:
    """Whether torchvision's ResNet50 weights are in the torch hub cache already."""
    # Only imported when needed: torch and torchvision take seconds to load.
    import torch.hub
    from torchvision.models import ResNet50_Weights

    name = Path(ResNet50_Weights.DEFAULT.url).name
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def one_line(exc: BaseException) -> str:
    """An exception as a single line: psycopg and botocore messages span several."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def say(message: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# -- photos ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    """How an angle looks on the picture: head offset, size and side light."""

    dx: float
    dy: float
    rx: float
    ry: float
    light: float
    arms: bool = False


POSES: dict[str, Pose] = {
    "front": Pose(0, 0, 105, 140, 0.0),
    "left": Pose(-55, 0, 85, 138, -0.7),
    "right": Pose(55, 0, 85, 138, 0.7),
    "up": Pose(0, -35, 105, 115, 0.1),
    "down": Pose(0, 30, 105, 118, -0.1),
    "raised": Pose(0, 35, 92, 122, 0.2, arms=True),
}
# How far each session has drifted from the first: six near re-takes (enough history for
# the person's noise floor from the fifth on), then one that drifts more.
DRIFT = (0.0, 0.01, 0.02, 0.01, 0.03, 0.02, 0.22)


def draw_photo(angle: str, session: int, rng: np.random.Generator) -> bytes:
    """One 640x480 JPEG of a made-up face at ``angle``, drifted for ``session``.

    Simple shapes, angle-specific shading and camera noise: enough for the pipeline to
    see differences between sessions, without any real person's photo.
    """
    pose = POSES[angle]
    drift = DRIFT[min(session, len(DRIFT) - 1)]
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    background = 205 - 50 * ys / HEIGHT
    canvas = np.stack([background, background + 4, background + 14], axis=-1)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)

    scale = 1.0 + 0.4 * drift
    cx = WIDTH / 2 + pose.dx + 120 * drift
    cy = HEIGHT / 2 - 10 + pose.dy + 60 * drift
    rx, ry = pose.rx * scale, pose.ry * scale
    skin = tuple(int(c * (1.0 - 0.5 * drift)) for c in (222, 178, 148))
    hair = tuple(int(c + 160 * drift) for c in (70, 50, 35))
    shirt = (60 + int(300 * drift), 90, 140)

    draw.ellipse((cx - 2.2 * rx, cy + 0.8 * ry, cx + 2.2 * rx, cy + 2.6 * ry), fill=shirt)
    draw.rectangle((cx - 0.35 * rx, cy + 0.6 * ry, cx + 0.35 * rx, cy + 1.1 * ry), fill=skin)
    if pose.arms:
        for side in (-1, 1):
            x = cx + side * 1.7 * rx
            draw.line((x, cy + 1.3 * ry, x + side * 20, cy - 1.2 * ry), fill=skin, width=42)
    draw.ellipse((cx - 1.05 * rx, cy - 1.08 * ry, cx + 1.05 * rx, cy + 0.3 * ry), fill=hair)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    draw.chord((cx - 1.02 * rx, cy - 1.05 * ry, cx + 1.02 * rx, cy - 0.2 * ry), 190, 350, hair)

    turn = pose.light * 0.45 * rx  # features move towards the side the head turns to
    tilt = pose.dy * 0.5
    eye_y = cy - 0.18 * ry + tilt
    for side in (-1, 1):
        ex = cx + side * 0.38 * rx + turn
        draw.ellipse((ex - 14, eye_y - 8, ex + 14, eye_y + 8), fill=(245, 245, 240))
        draw.ellipse((ex - 6, eye_y - 6, ex + 6, eye_y + 6), fill=(50, 40, 35))
        draw.line((ex - 18, eye_y - 20, ex + 18, eye_y - 22), fill=hair, width=5)
    nose_x, nose_y = cx + 1.3 * turn, cy + 0.12 * ry + tilt
    draw.polygon(
        [(nose_x, nose_y - 30), (nose_x - 12, nose_y + 10), (nose_x + 12, nose_y + 10)],
        fill=tuple(int(c * 0.85) for c in skin),
    )
    mouth_y = cy + 0.48 * ry + tilt
    draw.arc(
        (cx + turn - 38, mouth_y - 16, cx + turn + 38, mouth_y + 16), 20, 160, (140, 60, 60), 5
    )
    if drift > 0.1:
        # A mark that appears only in the session that drifts more.
        mx, my = cx - 0.5 * rx + turn, cy + 0.3 * ry
        draw.ellipse((mx - 22, my - 16, mx + 22, my + 16), fill=(150, 95, 80))

    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    # Side light for turned heads, top light for up/down: the angle changes the shading.
    shade = 1.0 + pose.light * 0.35 * np.clip((xs - cx) / (2 * rx), -1, 1)
    shade += 0.15 * np.clip((cy - ys) / (2 * ry), -1, 1) * np.sign(pose.dy)
    pixels = pixels * shade[..., None] + rng.normal(0.0, 6.0, pixels.shape)
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def generated_sessions(seed: int = 7) -> list[list[Photo]]:
    """Four sessions x six angles of a made-up person, as JPEG bytes in memory only."""
    rng = np.random.default_rng(seed)
    return [
        [
            Photo(angle, draw_photo(angle, session, rng), ".jpg", f"generated {angle}")
            for angle in ANGLES
        ]
        for session in range(GENERATED_SESSIONS)
    ]


def folder_sessions(folder: Path) -> list[list[Photo]]:
    """The folder's photos in name order, split into as few sessions of 3-6 as fit.

    Sessions are balanced (9 photos: 5 + 4, not 6 + 3) so none falls under the
    minimum; angles are given in order within each session.
    """
    if not folder.is_dir():
        raise DemoError(f"{folder} is not a folder")
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES),
        key=lambda p: p.name,
    )
    if len(files) < MIN_IMAGES:
        raise DemoError(
            f"{folder} has {len(files)} photo(s) ({', '.join(sorted(PHOTO_SUFFIXES))}); "
            f"a session needs at least {MIN_IMAGES}"
        )
    count = math.ceil(len(files) / len(ANGLES))
    sizes = [len(files) // count + (1 if i < len(files) % count else 0) for i in range(count)]
    sessions: list[list[Photo]] = []
    start = 0
    for size in sizes:
        chunk = files[start : start + size]
        start += size
        sessions.append(
            [
                Photo(angle, path.read_bytes(), path.suffix.lower(), path.name)
                for angle, path in zip(ANGLES, chunk, strict=False)
            ]
        )
    return sessions


# -- printing ----------------------------------------------------------------------


def _score(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def format_comparison(last: int, first: int, result: dict[str, Any]) -> str:
    """The comparison of two sessions, with its layers, as a few readable lines."""
    lines = [
        f"Session {last} against session {first}: overall_delta {_score(result['overall_delta'])}"
        f" ({result['overall_trend']}, stability {_score(result['stability_index'])},"
        f" comparison_method {result['comparison_method']})",
        "",
        f"  {'layer':<10}{'delta':>8}  {'variation':<10}{'sessions':>9}",
    ]
    layers = result.get("layers", {})
    for name in ("immediate", "rolling", "monthly", "lifetime"):
        if name not in layers:
            continue
        layer = layers[name]
        lines.append(
            f"  {name:<10}{_score(layer['delta']):>8}  {layer['variation_level'] or '-':<10}"
            f"{layer['sessions']:>9}"
        )
    return "\n".join(lines)


# -- the run -----------------------------------------------------------------------


def _quietly(action: Callable[[], object], what: str) -> None:
    """Clean-up must not hide the error that caused it."""
    try:
        action()
    except Exception as exc:
        say(f"could not stop {what}: {one_line(exc)}")


def run(args: argparse.Namespace) -> None:
    """Set up the demo's stack, send the sessions, print what came back, tear it down."""
    caller_dir = Path(os.environ.get("CHANGEWATCH_DEMO_CWD") or Path.cwd())
    if args.folder is not None:
        folder = (caller_dir / args.folder).resolve()
        sessions = folder_sessions(folder)
        say(f"photos: {sum(map(len, sessions))} from {folder}, {len(sessions)} session(s)")
    else:
        sessions = generated_sessions()
        say(f"photos: generated, {len(sessions)} sessions x {len(ANGLES)} angles (in memory)")
    if len(sessions) < 2:
        say("only one session: its change_score is 0.0 and there is nothing to compare")

    configure_environment()
    # Imported only now: celeryconfig and worker.settings read the environment on import.
    import boto3
    import psycopg
    import redis
    from botocore.exceptions import BotoCoreError, ClientError

    from changewatch.producer import Producer
    from changewatch.schema.contract import ANGLES as CONTRACT_ANGLES
    from changewatch.schema.migrate import ensure_database, migrate
    from scripts.localstack import S3Server, Worker, recreate_database

    if CONTRACT_ANGLES != ANGLES:
        raise DemoError(f"demo angles {ANGLES} differ from schema.contract's {CONTRACT_ANGLES}")
    database_url = os.environ["DATABASE_URL"]
    broker_url = os.environ["CELERY_BROKER_URL"]

    try:
        if args.fresh:
            recreate_database(database_url)
            say(f"database: recreated {redact(database_url)}")
        elif ensure_database(database_url):
            say(f"database: created {redact(database_url)}")
        applied = migrate(database_url)
    except psycopg.Error as exc:
        raise DemoError(f"PostgreSQL at {redact(database_url)}: {one_line(exc)}") from exc
    say(f"database: {redact(database_url)}, {len(applied)} migration(s) applied")
    try:
        redis.Redis.from_url(broker_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise DemoError(f"Redis at {redact(broker_url)}: {one_line(exc)}") from exc
    say(f"broker: {redact(broker_url)}, results: {redact(os.environ['CELERY_RESULT_BACKEND'])}")

    model, weights = resolve_model()
    if weights == "random":
        print(
            "NOTICE: CHANGEWATCH_MODEL_WEIGHTS=random: seeded random weights, for tests only;"
            " scores show the mechanics, not meaningful change.",
            flush=True,
        )
    say(f"model: {model}, weights: {weights}")

    with contextlib.ExitStack() as cleanup:
        own_s3 = not os.environ.get("AWS_ENDPOINT_URL_S3")
        if not own_s3:
            say(f"S3: {os.environ['AWS_ENDPOINT_URL_S3']} (from AWS_ENDPOINT_URL_S3)")
        else:
            server = S3Server()
            cleanup.callback(_quietly, server.stop, "the S3 server")  # also if start fails
            server.start()
            os.environ.update(server.env())
            say(f"S3: started moto's server at {server.endpoint}")
        s3 = boto3.client("s3")
        try:
            ensure_bucket(s3, args.bucket, ClientError)
        except (BotoCoreError, ClientError) as exc:
            raise DemoError(f"S3 bucket {args.bucket}: {one_line(exc)}") from exc

        producer = Producer()
        # Jobs left by an interrupted run point at an S3 server that is gone: drop them,
        # but only from the demo's own Redis database unless --fresh asks for it.
        if args.fresh or (own_s3 and broker_url == DEFAULT_BROKER_URL):
            purged = producer.celery.control.purge()
            say(f"queue: purged {purged} waiting message(s)")
        WORKER_LOG.parent.mkdir(parents=True, exist_ok=True)
        worker = Worker(
            env={
                "CHANGEWATCH_MODEL": model,
                "CHANGEWATCH_MODEL_WEIGHTS": weights,
                "CHANGEWATCH_ALLOWED_BUCKETS": args.bucket,
            },
            name=f"demo-{os.getpid()}",
            log_path=WORKER_LOG,
        )
        say(f"worker: starting (log: {WORKER_LOG.relative_to(ROOT)})")
        cleanup.callback(_quietly, worker.stop, "the worker")
        worker.start()
        try:
            worker.wait_ready(producer.celery, timeout=max(args.timeout, 180.0))
            say("worker: ready")
            use_model(producer, model, weights)

            def worker_alive() -> None:
                code = worker.process.poll() if worker.process is not None else None
                if code is not None:
                    raise DemoError(f"the worker exited with status {code}; see {WORKER_LOG}")

            send_sessions(
                producer,
                s3,
                args.bucket,
                sessions,
                args.timeout,
                ClientError,
                worker_alive,
                as_json=args.json,
            )
        except DemoError:
            raise
        except Exception as exc:
            raise DemoError(f"{one_line(exc)} (worker log: {WORKER_LOG})") from exc
        say("stopping the worker" + (" and the S3 server" if own_s3 else ""))


def use_model(producer: Any, model: str, weights: str) -> None:
    """Make the demo worker's model the one results report in the demo's own database.

    The demo database keeps earlier runs, maybe of another model; this is the operator's
    `producer model activate --force`, Celery moving the jobs queue to the new worker.
    """
    from changewatch.producer import models
    from changewatch.worker.embed import model_id_for

    model_id = model_id_for(weights, model)
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
        images: dict[str, str] = {}
        for photo in photos:
            key = f"{user_id}/{session_id}/{photo.angle}{photo.suffix}"
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=photo.data, ContentType=content_type)
            except client_error as exc:
                raise DemoError(f"upload of s3://{bucket}/{key}: {one_line(exc)}") from exc
            images[photo.angle] = f"s3://{bucket}/{key}"
        captured_at = first_at + SESSION_GAP * index
        producer.analyze(user_id, session_id, captured_at, images)
        say(f"session {index + 1}: {len(images)} photos uploaded, job queued")
    for index, session_id in enumerate(session_ids):
        wait_while(
            worker_alive,
            lambda t, s=session_id: producer.wait(s, t),
            timeout,
            f"session {index + 1} ({session_id})",
        )
        say(f"session {index + 1}: analyzed")
    from changewatch.producer import history

    # Read back after all finished: each write rescores the history, so these are final.
    sessions_out = producer.history(user_id)
    comparison = None
    if len(sessions) >= 2:
        producer.compare(user_id, session_ids[-1], session_ids[0])
        comparison = wait_while(
            worker_alive,
            lambda t: producer.wait_comparison(session_ids[-1], session_ids[0], t),
            timeout,
            "the comparison",
        )
    plot = history.plot(sessions_out, HISTORY_PLOT, "changewatch demo: change over time")
    if as_json:
        print(json.dumps({"sessions": sessions_out, "comparison": comparison, "plot": str(plot)}))
        return
    first = sessions_out[0]
    print()
    print(f"One person, {len(sessions_out)} sessions; model {first['model_id']}")
    print("change: cosine distance to the mean of the person's earlier sessions (0 = none);")
    print("floor: the person's own usual variation; x floor: change / floor (< 1: usual).")
    print()
    print(history.table(sessions_out))
    print()
    if comparison is not None:
        print(format_comparison(len(sessions), 1, comparison))
        print()
    print(f"plot: {plot.relative_to(ROOT)}")


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


if __name__ == "__main__":
    sys.exit(main())
