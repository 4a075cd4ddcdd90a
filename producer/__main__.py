"""``python -m changewatch.producer``: analyze, compare, status and result, one JSON
object on stdout.

``history U`` prints a table for people (``--json`` for programs, ``--plot FILE.png``).
``report U --out FILE.html`` writes one self-contained HTML page of that history.

``reap --every S`` runs until stopped and prints one JSON line per pass that re-sent jobs.
``backfill`` and ``model list|activate`` roll a new embedding model out (or back).

Exit status: 0 done, 1 the job failed or is unknown, 2 bad arguments or an invalid job,
3 a dependency (database, broker) is unreachable, 4 --wait timed out. A one-line reason
goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from ..schema.contract import JobError
from . import admin, bulk, models, reaper
from .api import JobFailed, NotFound, Producer


def _image(value: str) -> tuple[str, str]:
    angle, sep, uri = value.partition("=")
    if not sep or not angle or not uri:
        raise argparse.ArgumentTypeError(f"expected ANGLE=s3://BUCKET/KEY, got {value!r}")
    return angle.strip(), uri.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m changewatch.producer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _job_commands(sub)
    _operator_commands(sub)
    _model_commands(sub)
    _read_commands(sub)
    return parser


Subparsers = Any  # argparse's _SubParsersAction, a private name


def _job_commands(sub: Subparsers) -> None:
    analyze = sub.add_parser("analyze", help="validate a session job and enqueue it")
    analyze.add_argument("--user-id", required=True)
    analyze.add_argument("--session-id", required=True)
    analyze.add_argument("--captured-at", required=True, help="ISO 8601 with a timezone")
    analyze.add_argument(
        "--image", action="append", type=_image, required=True, metavar="ANGLE=s3://BUCKET/KEY"
    )
    analyze.add_argument("--wait", action="store_true", help="print the finished analysis")
    analyze.add_argument("--timeout", type=float, default=300.0, help="seconds (with --wait)")

    compare = sub.add_parser("compare", help="compare two analyzed sessions of one user")
    compare.add_argument("--user-id", required=True)
    compare.add_argument("--current", required=True)
    compare.add_argument("--previous", required=True)
    compare.add_argument("--wait", action="store_true")
    compare.add_argument("--timeout", type=float, default=300.0)

    bulk = sub.add_parser("bulk", help="enqueue every job of a JSON-lines file")
    bulk.add_argument("file", type=Path, help="one analyze payload per line")
    bulk.add_argument("--wait", action="store_true", help="wait for all, with a progress bar")
    bulk.add_argument("--timeout", type=float, default=3600.0)

    retry = sub.add_parser("retry", help="enqueue a failed job again, or all failed jobs")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("session_id", nargs="?")
    which.add_argument("--all-failed", action="store_true")


def _operator_commands(sub: Subparsers) -> None:
    reap = sub.add_parser(
        "reap", help="send again the queued/running jobs whose broker message was lost"
    )
    reap.add_argument(
        "--older-than",
        type=float,
        default=reaper.DEFAULT_OLDER_THAN_S,
        metavar="S",
        help="only jobs unchanged for S seconds (default %(default)g)",
    )
    reap.add_argument(
        "--every", type=float, metavar="S", help="run until stopped, a pass every S seconds"
    )

    enroll = sub.add_parser(
        "enroll", help="make a person known (senders other than this producer, once each)"
    )
    enroll.add_argument("user_id")

    forget = sub.add_parser(
        "forget-user",
        help="delete a person's rows, queued jobs, stored results and photos, and prove it",
    )
    forget.add_argument("user_id")
    forget.add_argument(
        "--keep-objects", action="store_true", help="leave their photos in S3 (deleted by default)"
    )

    delete = sub.add_parser(
        "delete-session",
        help="delete one session as if it never was: rescore the later ones, prove it is gone",
    )
    delete.add_argument("session_id")
    delete.add_argument(
        "--keep-objects", action="store_true", help="leave its photos in S3 (deleted by default)"
    )
    delete.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for it")


def _model_commands(sub: Subparsers) -> None:
    backfill = sub.add_parser(
        "backfill",
        help="re-embed stored sessions with the model of the workers now consuming",
    )
    backfill.add_argument("--model", help="the model id (default: the consuming workers')")
    backfill.add_argument("--user-id", help="only this person's sessions")
    backfill.add_argument("--wait", action="store_true", help="wait, with a progress bar")
    backfill.add_argument("--timeout", type=float, default=24 * 3600.0)

    model = sub.add_parser("model", help="list models, or make one the model results report")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    model_sub.add_parser("list", help="models, their analyses, missing sessions and workers")
    activate = model_sub.add_parser("activate", help="switch results to this model")
    activate.add_argument("model_id")
    activate.add_argument(
        "--force", action="store_true", help="even while sessions lack its analysis"
    )


def _read_commands(sub: Subparsers) -> None:
    history = sub.add_parser(
        "history", help="a person's sessions in capture order: scores, noise floor, notes"
    )
    history.add_argument("user_id")
    history.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw them")
    history.add_argument("--json", action="store_true", help="JSON instead of the table")

    report = sub.add_parser(
        "report", help="one self-contained HTML page: history, plot, trend and region maps"
    )
    report.add_argument("user_id")
    report.add_argument("--out", type=Path, required=True, metavar="FILE.html")

    status = sub.add_parser("status", help="a job's state in Postgres")
    status.add_argument("session_id")
    result = sub.add_parser("result", help="a session's stored analysis")
    result.add_argument("session_id")


def _reap_forever(producer: Producer, older_than: float, every: float) -> NoReturn:
    try:
        for done in reaper.reap_forever(producer, older_than, every):
            if done.sessions or done.comparisons:
                print(json.dumps(done.report()), flush=True)
    except KeyboardInterrupt:
        sys.exit(0)
    raise AssertionError("the reaper loop never ends")


def _history(args: argparse.Namespace, producer: Producer) -> dict[str, Any] | None:
    from . import history

    sessions = producer.history(args.user_id)
    if not sessions:
        raise NotFound(f"no analyzed session of user {args.user_id}")
    out: dict[str, Any] = {"user_id": args.user_id, "sessions": sessions}
    if args.plot:
        out["plot"] = str(history.plot(sessions, args.plot, f"user {args.user_id}"))
    if args.json:
        return out
    print(history.table(sessions))
    print(history.trend_line(sessions[-1]))
    if args.plot:
        print(f"plot: {out['plot']}")
    return None


def _run(args: argparse.Namespace, producer: Producer) -> dict[str, Any] | None:
    if args.command == "analyze":
        images = [{"angle": angle, "uri": uri} for angle, uri in args.image]
        queued = producer.analyze(args.user_id, args.session_id, args.captured_at, images)
        return producer.wait(args.session_id, args.timeout) if args.wait else queued
    if args.command == "compare":
        queued = producer.compare(args.user_id, args.current, args.previous)
        if args.wait:
            return producer.wait_comparison(args.current, args.previous, args.timeout)
        return queued
    if args.command == "bulk":
        jobs, invalid = bulk.read_jobs(args.file)
        ids = bulk.enqueue_all(producer, jobs)
        out: dict[str, Any] = {"enqueued": len(ids), "invalid": invalid}
        if args.wait:
            counts = bulk.wait_all(producer, ids, args.timeout)
            out |= {"succeeded": counts.get("succeeded", 0), "failed": counts.get("failed", 0)}
            out["unfinished"] = len(ids) - out["succeeded"] - out["failed"]
        return out
    if args.command == "retry":
        queued = admin.retry_failed(producer, None if args.all_failed else args.session_id)
        return {"requeued": len(queued), "jobs": queued}
    if args.command == "reap":
        if args.every is None:
            return reaper.reap(producer, args.older_than).report()
        _reap_forever(producer, args.older_than, args.every)
    if args.command == "forget-user":
        return admin.forget_user(producer, args.user_id, delete_objects=not args.keep_objects)
    if args.command == "delete-session":
        return producer.delete_session(
            args.session_id, args.timeout, delete_objects=not args.keep_objects
        )
    if args.command == "enroll":
        return producer.enroll(args.user_id)
    if args.command == "backfill":
        return models.backfill(producer, args.model, args.user_id, args.wait, args.timeout)
    if args.command == "model":
        if args.model_command == "list":
            return models.list_models(producer)
        return models.activate(producer, args.model_id, args.force)
    if args.command == "history":
        return _history(args, producer)
    if args.command == "report":
        from . import report

        return {
            "user_id": args.user_id,
            "report": str(report.write(producer, args.user_id, args.out)),
        }
    if args.command == "status":
        return producer.status(args.session_id)
    return producer.result(args.session_id)


def main(argv: list[str] | None = None, make_producer: Callable[[], Producer] = Producer) -> int:
    args = build_parser().parse_args(argv)
    out: dict[str, Any] | None = None
    try:
        out = _run(args, make_producer())
        # bulk: any invalid line or failed/unfinished job makes the run fail as a whole.
        code = 1 if out and any(out.get(k) for k in ("invalid", "failed", "unfinished")) else 0
        if out and out.get("interrupted"):  # backfill stopped with Ctrl+C: run it again to resume
            print("interrupted: run the same command again to resume", file=sys.stderr)
            code = 130
    except JobError as err:
        print(f"error: {err.code}: {err.message}", file=sys.stderr)
        code = 2
    except JobFailed as err:
        out = err.status
        print(f"failed: {err}", file=sys.stderr)
        code = 1
    except NotFound as err:
        print(f"not found: {err}", file=sys.stderr)
        code = 1
    except TimeoutError as err:
        print(f"timeout: {err}", file=sys.stderr)
        code = 4
    except Exception as err:  # broker or database unreachable, with the library's reason
        print(
            f"unavailable: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            file=sys.stderr,
        )
        code = 3
    if out is not None:
        print(json.dumps(out, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
