"""Bulk enqueue from a JSON-lines file, and waiting on many jobs, with progress bars."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..schema.contract import parse_analyze
from ..schema.errors import Code, JobError
from ..schema.status import Status
from .api import Producer
from .store import sessions


def read_jobs(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Valid payloads, and one report per invalid line (line number, code, message)."""
    jobs, invalid = [], []
    with path.open() as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                payload = json.loads(line)
                if not isinstance(payload, dict):
                    raise JobError(Code.INVALID_PAYLOAD, "each line must be a JSON object")
                parse_analyze(payload)
            except json.JSONDecodeError as exc:
                invalid.append({"line": number, "code": Code.INVALID_JSON, "message": str(exc)})
            except JobError as err:
                invalid.append({"line": number, "code": err.code, "message": err.message})
            else:
                jobs.append(payload)
    return jobs, invalid


def enqueue_all(producer: Producer, jobs: list[dict[str, Any]]) -> list[str]:
    ids = []
    for job in tqdm(jobs, desc="enqueue", unit="job", dynamic_ncols=True):
        producer.analyze(job["user_id"], job["session_id"], job["captured_at"], job["images"])
        ids.append(job["session_id"])
    return ids


def wait_all(producer: Producer, session_ids: Iterable[str], timeout: float) -> dict[str, int]:
    """Poll Postgres for the whole set at once; the bar shows finished jobs, rate and ETA."""
    ids = [uuid.UUID(s) for s in session_ids]
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    with tqdm(total=len(ids), desc="analyze", unit="job", dynamic_ncols=True) as bar:
        while True:
            with producer.connect() as conn:
                counts = sessions.count_by_status(conn, ids)
            done = counts.get(Status.SUCCEEDED, 0) + counts.get(Status.FAILED, 0)
            bar.update(done - bar.n)
            bar.set_postfix(failed=counts.get(Status.FAILED, 0))
            if done >= len(ids) or time.monotonic() >= deadline:
                return counts
            time.sleep(0.5)
