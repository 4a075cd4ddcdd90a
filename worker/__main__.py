"""``python -m changewatch.worker``: operator commands for changewatch workers.

``launch`` runs one Celery worker per GPU (or N CPU workers) and supervises them;
``health`` says whether this host's worker is ready; ``prepare-model`` builds the compiled
INT8 model ahead of the first worker (an image build, a node's start-up).
Arguments after ``--`` go to every ``celery worker``, e.g. ``-- --loglevel INFO``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from ..settings import Settings
from . import launch
from .logs import use_json


def _launch(args: argparse.Namespace, passthrough: list[str]) -> int:
    return launch.launch(
        gpus=args.gpus,
        cpu=args.cpu,
        metrics_port=args.metrics_port,
        grace_s=args.grace,
        celery_args=passthrough,
    )


def _health(args: argparse.Namespace, passthrough: list[str]) -> int:
    from .app import app, settings
    from .health import readiness

    report = readiness(app, settings(), args.metrics_port, args.node, args.timeout)
    print(json.dumps(report))
    return 0 if report["ready"] else 1


def _prepare_model(args: argparse.Namespace, passthrough: list[str]) -> int:
    """Quantize, compile and load once, so a worker start only loads (seconds)."""
    from .embed import Embedder
    from .int8 import Int8Unavailable

    s = Settings.from_env()
    if s.precision != "int8":
        print(
            f"CHANGEWATCH_PRECISION={s.precision}: nothing to prepare (only int8 is compiled "
            "ahead of time)"
        )
        return 0
    embedder = Embedder(s.model_weights, "int8", model=s.model, model_cache=s.model_cache)
    try:
        embedder.setup("cpu")  # builds the artifact if missing, then loads and warms it
        path = embedder.prepare_int8()
    except Int8Unavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"model_id": embedder.model_id, "artifact": str(path)}))
    return 0


def _cpu_workers(value: str) -> int:
    """``--cpu N`` or ``--cpu auto``: one worker per core, since the INT8 program holds the
    GIL for its whole forward pass and a second process keeps the other core decoding."""
    if value == "auto":
        return launch.usable_cpus()
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or auto, not {value!r}") from None


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    # An operator's CHANGEWATCH_METRICS_PORT becomes the base, not silently replaced.
    metrics_port = (settings or Settings()).metrics_port
    parser = argparse.ArgumentParser(prog="python -m changewatch.worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "launch",
        help="one Celery worker per GPU (or N CPU workers), supervised",
        description="Start one `celery -A changewatch.worker worker` per device, pinned with "
        "CUDA_VISIBLE_DEVICES and named gpu0@%h, gpu1@%h (cpu0@%h... with --cpu). "
        "SIGTERM/SIGINT: warm shutdown of all; a crashed worker is restarted with backoff.",
    )
    devices = run.add_mutually_exclusive_group(required=True)
    devices.add_argument("--gpus", metavar="all|0,1,...", help="GPUs to run a worker on")
    devices.add_argument(
        "--cpu",
        type=_cpu_workers,
        metavar="N|auto",
        help="run N CPU workers instead; auto: one per usable core (the fastest layout: "
        "each process has its own GIL)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=metrics_port,
        metavar="PORT",
        help="worker i serves /metrics on PORT + i; 0 turns metrics off (default: "
        "$CHANGEWATCH_METRICS_PORT, else 9808)",
    )
    run.add_argument(
        "--grace",
        type=float,
        default=launch.DEFAULT_GRACE_S,
        metavar="SECONDS",
        help="how long in-flight jobs may finish on shutdown before SIGKILL (%(default)s)",
    )
    run.set_defaults(handler=_launch, passthrough=True)

    health = sub.add_parser(
        "health",
        help="readiness: model loaded, broker, database and storage reachable",
        description="Exit 0 when this host's worker has its model loaded and warm (its "
        "metrics say so, or --node answers a ping) and broker, database and storage "
        "answer; prints one JSON report.",
    )
    health.add_argument("--node", help="check this Celery node by ping (e.g. gpu0@host)")
    health.add_argument("--metrics-port", type=int, default=metrics_port)
    health.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    health.set_defaults(handler=_health)

    prepare = sub.add_parser(
        "prepare-model",
        help="build the compiled INT8 model (CHANGEWATCH_PRECISION=int8) ahead of time",
        description="Quantize (calibrated on the package's own drawn photos), compile with "
        "AOTInductor and save to CHANGEWATCH_MODEL_CACHE, keyed by torch version, model id "
        "and CPU ISA; then load it once, which fills Inductor's cache there too. A worker "
        "start then takes seconds. Run it on the kind of CPU the workers run on.",
    )
    prepare.set_defaults(handler=_prepare_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, passthrough = args_in[:cut], args_in[cut + 1 :]
    try:
        settings = Settings.from_env()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser = build_parser(settings)
    args = parser.parse_args(args_in)
    if passthrough and not getattr(args, "passthrough", False):
        parser.error(f"{args.command} takes no arguments after --")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The same lines as the workers' (CHANGEWATCH_LOG_FORMAT).
    use_json(logging.getLogger(), settings.log_format)
    try:
        return int(args.handler(args, passthrough))
    except launch.LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
