"""The demo's command line, its own services and model, and how it talks to the person."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.harness.services import ROOT

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/changewatch_demo"
# Not the app's defaults (0/1) nor the tests' (14/15): the demo never eats their messages.
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/2"
DEFAULT_RESULT_BACKEND = "redis://127.0.0.1:6379/3"
DEFAULT_BUCKET = "changewatch-demo"
# The same order as schema.contract.ANGLES; copied so argparse runs before the heavy
# imports.
ANGLES: tuple[str, ...] = ("front", "left", "right", "up", "down", "raised")
MIN_IMAGES = 3
GENERATED_SESSIONS = 7
SESSION_GAP = timedelta(weeks=3)
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".tif", ".tiff"})
WIDTH, HEIGHT = 640, 480
WORKER_LOG = ROOT / "artifacts" / "demo-worker.log"
HISTORY_PLOT = ROOT / "artifacts" / "demo-history.png"
REPORT = ROOT / "artifacts" / "demo-report.html"


class DemoError(RuntimeError):
    """A reason the demo cannot go on, already phrased for the person running it."""


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

    The worker processes inherit these variables; Producer() reads them when built.
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
