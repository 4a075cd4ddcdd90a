"""Child processes of the harness: start with a log file, wait until ready, stop for sure.

One place for what every server and worker here does, so a stop always ends in a dead
process (SIGTERM, then SIGKILL after a grace period) and a dead child is noticed while
waiting for it instead of at the timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def start(
    argv: Sequence[str],
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    append: bool = True,
) -> subprocess.Popen[bytes]:
    """``argv`` with stdout and stderr appended to ``log`` (or written afresh with
    ``append=False``; discarded without a log)."""
    mode = "ab" if append else "wb"
    output = open(log, mode) if log is not None else None  # noqa: SIM115  # the child keeps it
    try:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=output if output is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL,
        )
    finally:
        if output is not None:
            output.close()


def stop(
    process: subprocess.Popen[bytes] | None,
    timeout: float = 10.0,
    sig: signal.Signals = signal.SIGTERM,
) -> int | None:
    """``sig`` (SIGTERM: a clean shutdown), up to ``timeout`` s to exit, then SIGKILL.

    Returns the exit status; None when there was no process.
    """
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_until(
    ready: Callable[[], object],
    timeout: float,
    not_ready: str,
    process: subprocess.Popen[bytes] | None = None,
    exited: str = "process exited with {code}",
    interval: float = 0.1,
) -> None:
    """Until ``ready()`` is true; ``exited`` (a RuntimeError) as soon as ``process`` dies,
    ``not_ready`` (a TimeoutError) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(exited.format(code=process.returncode))
        if ready():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(not_ready)
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something listens on 127.0.0.1:``port`` (and ``process``, if given, lives)."""
    wait_until(
        lambda: port_open(port),
        timeout,
        f"nothing listens on 127.0.0.1:{port} after {timeout}s",
        process,
    )


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


def send(process: subprocess.Popen[bytes] | int, sig: signal.Signals) -> None:
    """A signal to a child (or to any pid)."""
    os.kill(process if isinstance(process, int) else process.pid, sig)
