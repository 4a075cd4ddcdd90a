"""A real foreign client: a Node.js service on celery-node (pinned in tests/node, installed
by scripts/setup.sh with ``npm ci``) drives a real worker through the wire contract only.

It enrolls a person, sends two analyses and a comparison, receives their notifications
with its own celery-node worker, sends a malformed job, and forgets the person: first
without a token (refused, recorded), then with one. The test holds what it received to
``producer result`` and to the rows. Skips without node locally; fails in CI.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import IO, Any

from bench.harness.services import ROOT, Worker
from changewatch.producer import Producer
from tests.helpers import (
    DELETE_SECRET,
    NOTIFY_QUEUE,
    Uploader,
    cli,
    query,
    require,
    series_sessions,
)

NODE_DIR = ROOT / "tests" / "node"


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """The service's stdout, line by line, read in a thread (so reads can time out)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _event(lines: queue.Queue[str], name: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    while True:
        try:
            line = lines.get(timeout=300)
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"the node service sent no {name!r} line") from None
        if line.startswith("{"):
            event: dict[str, Any] = json.loads(line)
            if event.get("event") == name:
                return event


def _spec(photos: Path, uploader: Uploader, user: uuid.UUID) -> dict[str, Any]:
    series = series_sessions(photos)
    return {
        "brokers": [os.environ["CELERY_BROKER_URL"]],
        "backend": os.environ["CELERY_RESULT_BACKEND"],
        "notifyQueue": NOTIFY_QUEUE,
        "deleteSecret": DELETE_SECRET,
        "userId": str(user),
        "sessions": [
            {
                "sessionId": str(uuid.uuid4()),
                "capturedAt": f"2026-03-0{i + 1}T08:00:00Z",
                "images": uploader.session(user, series[i]),
            }
            for i in range(2)
        ],
        "malformedSessionId": str(uuid.uuid4()),
    }


def test_a_node_service_on_celery_node_uses_the_whole_contract(
    worker: Worker, photos: Path, uploader: Uploader, producer: Producer
) -> None:
    node = shutil.which("node")
    require(node is not None, "node is not installed (apt-get install nodejs npm)")
    require(
        (NODE_DIR / "node_modules" / "celery-node").is_dir(),
        "celery-node is not installed: run scripts/setup.sh (npm ci in tests/node)",
    )
    user = uuid.uuid4()
    spec = _spec(photos, uploader, user)
    proc = subprocess.Popen(
        [str(node), "service.js", json.dumps(spec)],
        cwd=NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines = _lines(proc.stdout)
    try:
        ready = _event(lines, "ready", proc)
        _check_ready(ready, spec, producer)
        proc.stdin.write("forget\n")
        proc.stdin.flush()
        done = _event(lines, "forgotten", proc)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    _check_forgotten(done, spec, producer)


def _check_ready(ready: dict[str, Any], spec: dict[str, Any], producer: Producer) -> None:
    assert ready["enrolled"]["result"] == {"user_id": spec["userId"], "status": "enrolled"}
    told = ready["notifications"]
    sessions = [s["sessionId"] for s in spec["sessions"]]
    assert [n["session_id"] for n in told] == sessions
    assert [n["request_task_id"] for n in told] == ready["analyses"]
    for n in told:
        assert n["status"] == "succeeded"
        code, result, _ = cli("result", n["session_id"])
        assert code == 0 and n["result"] == result
    comparison = ready["comparison"]
    assert comparison["status"] == "SUCCESS", comparison
    assert comparison["result"]["current_session_id"] == sessions[1]
    stored = producer.comparison(sessions[1], sessions[0])
    assert stored == {**comparison["result"], "status": "succeeded"}
    compared = ready["compared"]  # its notification too
    assert compared["status"] == "succeeded" and compared["result"] == comparison["result"]
    assert compared["request_task_id"] == comparison["taskId"]
    refusal = ready["malformed"]["notification"]
    assert refusal["status"] == "failed" and refusal["error"]["code"] == "too_few_images"
    assert refusal["request_task_id"] == ready["malformed"]["taskId"]
    status = producer.status(spec["malformedSessionId"])  # recorded, as a rejected message
    assert status["rejected_message"] and status["error"]["code"] == "too_few_images"
    unsigned = ready["unsigned"]  # refused, recorded, and nothing deleted
    assert unsigned["status"] == "FAILURE"
    assert query(
        producer.dsn,
        "SELECT error_code FROM rejected_messages WHERE task_id = %s",
        (unsigned["taskId"],),
    ) == [("not_authorized",)]
    assert producer.result(sessions[0])["user_id"] == spec["userId"]


def _check_forgotten(done: dict[str, Any], spec: dict[str, Any], producer: Producer) -> None:
    forgotten = done["forgotten"]
    assert forgotten["status"] == "SUCCESS", forgotten
    assert forgotten["result"]["status"] == "forgotten"
    assert forgotten["result"]["deleted"]["sessions"] == 2
    assert set(forgotten["result"]["remaining"].values()) == {0}
    code, _, _ = cli("status", spec["sessions"][0]["sessionId"])
    assert code == 1  # no such session any more
