"""Faults of a process: a worker killed mid-task, a server that hangs.

SIGSTOP/SIGCONT/SIGKILL work on any child (a worker, moto's S3 server), so a server
hangs (clients time out instead of being refused) or a worker dies mid-task.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from bench.harness.process import send


def pause(proc: subprocess.Popen[Any] | int) -> None:
    """SIGSTOP: the process keeps its sockets but answers nothing (clients time out)."""
    send(proc, signal.SIGSTOP)


def resume(proc: subprocess.Popen[Any] | int) -> None:
    send(proc, signal.SIGCONT)


@contextlib.contextmanager
def paused(proc: subprocess.Popen[Any] | int, seconds: float | None = None) -> Iterator[None]:
    """Stopped inside the block (for ``seconds`` if given), always continued afterwards."""
    pause(proc)
    try:
        if seconds is not None:
            time.sleep(seconds)
        yield
    finally:
        resume(proc)


def kill9(proc: subprocess.Popen[Any] | int) -> None:
    """SIGKILL, as the OOM killer or a pulled plug: no handler, no cleanup, no acks."""
    send(proc, signal.SIGKILL)
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=30)
