"""One Celery worker process per GPU (or N CPU workers), started and supervised together.

A worker holds one warm model on one device, so a multi-GPU host runs one worker per GPU,
each pinned with ``CUDA_VISIBLE_DEVICES`` and named ``gpu0@%h``, ``gpu1@%h``... so Flower,
``celery inspect`` and the per-worker metrics ports tell them apart.

The launcher itself never imports torch: CUDA state made in a parent is useless to its
children and costs GPU memory, so GPUs are counted from ``CUDA_VISIBLE_DEVICES`` or
``nvidia-smi -L``, and only as a last resort by torch in a throwaway subprocess.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

log = logging.getLogger("changewatch.launch")

DEFAULT_METRICS_PORT = 9808
DEFAULT_GRACE_S = 60.0
# Restart backoff: 1 s, 2 s, 4 s ... at most a minute, so a crash loop cannot spin.
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
# A child that ran this long was healthy: its next crash starts the backoff afresh.
STABLE_AFTER_S = 60.0
# This many crashes in a row, each before STABLE_AFTER_S, is a broken device or config:
# stop restarting that slot rather than hide the error behind endless restarts.
MAX_QUICK_FAILURES = 5
_POLL_S = 0.2
# Where the cgroup hierarchy is mounted, and which cgroup this process is in.
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_MEMBERSHIP = Path("/proc/self/cgroup")
_PR_SET_PDEATHSIG = 1


class LaunchError(RuntimeError):
    """The launch cannot start as asked (no GPU, bad device list); the message says why."""


@dataclass(frozen=True)
class WorkerSpec:
    """One child: its node name (``gpu0``), its environment overrides and its argv."""

    name: str
    env: Mapping[str, str]
    argv: Sequence[str]


# -- counting devices -----------------------------------------------------------------


def parse_visible_devices(value: str) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it: items up to the first empty or negative."""
    devices: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item or item.startswith("-"):
            break
        devices.append(item)
    return devices


def parse_nvidia_smi(text: str) -> list[str]:
    """Device ids from ``nvidia-smi -L``: GPU indices, or the MIG UUIDs of a partitioned GPU.

    A GPU in MIG mode is only usable through its MIG instances, one worker each.
    """
    devices: list[str] = []
    gpu: str | None = None
    migs: list[str] = []
    for line in [*text.splitlines(), "GPU end:"]:
        if match := re.match(r"GPU (\S+):", line):
            if gpu is not None:
                devices.extend(migs or [gpu])
            gpu, migs = match[1], []
        elif match := re.match(r"\s+MIG .*\(UUID: (MIG-[^)\s]+)\)", line):
            migs.append(match[1])
    return devices


def _torch_device_count(environ: Mapping[str, str]) -> int:
    """Ask torch in a subprocess, so CUDA is never initialised in the launcher."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(environ),
            check=False,
        )
        return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else 0
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def detect_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this host offers, as ``CUDA_VISIBLE_DEVICES`` values, one per worker."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:  # set by the operator or a scheduler: authoritative
        return parse_visible_devices(environ["CUDA_VISIBLE_DEVICES"])
    try:
        proc = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        proc = None
    if proc is not None and proc.returncode == 0 and (found := parse_nvidia_smi(proc.stdout)):
        return found
    return [str(i) for i in range(_torch_device_count(environ))]


def usable_cpus(cgroup: Path = CGROUP_ROOT, membership: Path = CGROUP_MEMBERSHIP) -> int:
    """The cores this process may use: its affinity (taskset, cgroup cpusets), capped by
    its cgroup's CPU quota (``docker run --cpus``, compose's ``cpus:``, a Kubernetes CPU
    limit, a systemd unit's ``CPUQuota``), which the affinity does not show. Without the
    cap, ``--cpu auto`` in a container limited to 2 CPUs on a 64-core host would start 64
    workers of ~1.2 GiB."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup, membership)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def cgroup_cpu_quota(
    root: Path = CGROUP_ROOT, membership: Path = CGROUP_MEMBERSHIP
) -> float | None:
    """CPUs' worth of time this process's cgroup may use, or None without a limit.

    cgroup v2: the tightest ``cpu.max`` ("200000 100000" is 2, "max 100000" none) from the
    process's own cgroup (``0::/path`` in ``membership``; a container's is the root of its
    namespace) up to the root. Else cgroup v1's ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us`` where a container sees its own (a quota of -1 is none).
    """
    own = root
    with contextlib.suppress(OSError):
        for line in membership.read_text().splitlines():
            if line.startswith("0::"):
                own = root / line[3:].strip().lstrip("/")
    limits = [
        quota
        for folder in (own, *own.parents)
        if folder.is_relative_to(root) and (quota := _cpu_max(folder)) is not None
    ]
    if limits:
        return min(limits)
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _cpu_max(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


# -- planning -------------------------------------------------------------------------


def resolve_gpus(requested: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """``all`` or ``0,1,...`` -> ``CUDA_VISIBLE_DEVICES`` values, one per worker.

    Integer ordinals count within an inherited ``CUDA_VISIBLE_DEVICES``, as CUDA's do.
    """
    environ = os.environ if environ is None else environ
    if requested.strip().lower() == "all":
        devices = detect_gpus(environ)
        if not devices:
            raise LaunchError(
                "no GPU found (CUDA_VISIBLE_DEVICES, nvidia-smi -L and torch see none); "
                "use --cpu N to run N CPU workers"
            )
        return devices
    items = [item.strip() for item in requested.split(",")]
    if not all(items) or len(set(items)) != len(items):
        raise LaunchError(f"--gpus needs 'all' or distinct ids like 0,1; got {requested!r}")
    inherited = environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is None:
        return items
    visible = parse_visible_devices(inherited)
    devices = []
    for item in items:
        if item.isdigit():
            if int(item) >= len(visible):
                raise LaunchError(f"GPU {item} is not among CUDA_VISIBLE_DEVICES={inherited!r}")
            devices.append(visible[int(item)])
        else:
            devices.append(item)
    return devices


def plan(
    *,
    gpus: str | None = None,
    cpu: int | None = None,
    metrics_port: int = DEFAULT_METRICS_PORT,
    celery_args: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> list[WorkerSpec]:
    """The children to run: exactly one of ``gpus`` ("all" or "0,1") or ``cpu`` (a count)."""
    environ = os.environ if environ is None else environ
    if (gpus is None) == (cpu is None):
        raise LaunchError("give exactly one of --gpus or --cpu")
    if any(arg in ("-n", "--hostname") or arg.startswith("--hostname=") for arg in celery_args):
        raise LaunchError("the launcher names each worker itself; drop -n/--hostname")
    envs: list[tuple[str, dict[str, str]]] = []
    if gpus is not None:
        given = [item.strip() for item in gpus.split(",")]
        devices = resolve_gpus(gpus, environ)
        # Name by the ordinal the operator typed where there is one, else by position.
        labels = given if all(g.isdigit() for g in given) else [str(i) for i in range(len(devices))]
        for label, device in zip(labels, devices, strict=True):
            envs.append(
                (f"gpu{label}", {"CUDA_VISIBLE_DEVICES": device, "CHANGEWATCH_DEVICE": "cuda"})
            )
    else:
        if cpu is None or cpu < 1:
            raise LaunchError("--cpu needs a count of at least 1")
        # N workers each using every core oversubscribe the CPU; torch reads OMP_NUM_THREADS.
        threads = environ.get("OMP_NUM_THREADS") or str(max(1, usable_cpus() // cpu))
        for i in range(cpu):
            envs.append(
                (
                    f"cpu{i}",
                    {
                        "CUDA_VISIBLE_DEVICES": "",
                        "CHANGEWATCH_DEVICE": "cpu",
                        "OMP_NUM_THREADS": threads,
                    },
                )
            )
    specs = []
    for index, (name, env) in enumerate(envs):
        env["CHANGEWATCH_METRICS_PORT"] = str(metrics_port + index if metrics_port > 0 else 0)
        argv = [sys.executable, "-m", "celery", "-A", "changewatch.worker", "worker"]
        specs.append(WorkerSpec(name, env, [*argv, "--hostname", f"{name}@%h", *celery_args]))
    return specs


# -- supervising ----------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook: the child gets SIGTERM (a warm shutdown) if the launcher dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


@dataclass
class _Slot:
    spec: WorkerSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    quick_failures: int = 0
    finished: bool = False  # exited on its own with status 0, or given up
    gave_up: bool = False


@dataclass
class Supervisor:
    """Runs the children, restarts crashed ones, and shuts all down warmly on a signal."""

    specs: Sequence[WorkerSpec]
    grace_s: float = DEFAULT_GRACE_S
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _slots: list[_Slot] = field(init=False, default_factory=list)
    _signals: int = field(init=False, default=0)
    _wake: threading.Event = field(init=False, default_factory=threading.Event)

    def run(self) -> int:
        """Until a signal or until every child is finished; 0 when all ended cleanly."""
        self._slots = [_Slot(spec) for spec in self.specs]
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in self._slots:
                self._start(slot)
            while not self._signals and not all(slot.finished for slot in self._slots):
                self._tend()
                self._wake.wait(_POLL_S)
                self._wake.clear()
        except BaseException:
            self._shutdown()  # never leave orphaned workers behind an error of our own
            raise
        else:
            return self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only count here; the loop acts, so no child can be spawned behind our back.
        self._signals += 1
        self._wake.set()

    def _start(self, slot: _Slot) -> None:
        slot.proc = subprocess.Popen(
            slot.spec.argv,
            env={**self.environ, **slot.spec.env},
            # Own session: a terminal's Ctrl+C reaches only the launcher, which forwards
            # one SIGTERM (Celery treats a second SIGINT as a cold shutdown).
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # safe: the launcher runs no threads
        )
        slot.started_at, slot.restart_at = time.monotonic(), None
        pinned = " ".join(f"{k}={v!r}" for k, v in sorted(slot.spec.env.items()))
        log.info("started %s (pid %d): %s", slot.spec.name, slot.proc.pid, pinned)

    def _tend(self) -> None:
        """Notice exits and restart crashed children once their backoff has passed."""
        now = time.monotonic()
        for slot in self._slots:
            if slot.proc is not None and (code := slot.proc.poll()) is not None:
                self._exited(slot, code, now)
            if slot.restart_at is not None and now >= slot.restart_at and not self._signals:
                self._start(slot)

    def _exited(self, slot: _Slot, code: int, now: float) -> None:
        pid, ran = slot.proc.pid if slot.proc else 0, now - slot.started_at
        slot.proc = None
        name = slot.spec.name
        if code == 0:  # e.g. `celery control shutdown`: a requested stop, not a crash
            log.info("%s (pid %d) exited cleanly after %.0fs; not restarting", name, pid, ran)
            slot.finished = True
            return
        slot.quick_failures = slot.quick_failures + 1 if ran < STABLE_AFTER_S else 1
        if slot.quick_failures >= MAX_QUICK_FAILURES:
            log.error(
                "%s (pid %d) %s after %.0fs, %d quick failures in a row; giving up on it",
                name,
                pid,
                _describe_exit(code),
                ran,
                slot.quick_failures,
            )
            slot.finished = slot.gave_up = True
            return
        delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (slot.quick_failures - 1))
        log.warning(
            "%s (pid %d) died (%s) after %.0fs; restarting in %.0fs",
            name,
            pid,
            _describe_exit(code),
            ran,
            delay,
        )
        slot.restart_at = now + delay

    def _shutdown(self) -> int:
        """SIGTERM every child (Celery's warm shutdown), wait up to grace_s, then SIGKILL."""
        alive = [slot for slot in self._slots if slot.proc is not None]
        if self._signals:
            log.info("shutting down %d worker(s), grace %.0fs", len(alive), self.grace_s)
        for slot in alive:
            self._send(slot, signal.SIGTERM)
        deadline, escalated = time.monotonic() + self.grace_s, False
        failed = any(slot.gave_up for slot in self._slots)
        while alive and time.monotonic() < deadline:
            if self._signals > 1 and not escalated:
                # A second Ctrl+C/SIGTERM: the operator will not wait for in-flight jobs.
                log.warning(
                    "second signal: cold shutdown; in-flight jobs are cancelled, not finished"
                )
                for slot in alive:
                    self._send(slot, signal.SIGQUIT)
                escalated = True
            for slot in list(alive):
                if slot.proc is not None and (code := slot.proc.poll()) is not None:
                    name, pid = slot.spec.name, slot.proc.pid
                    log.info("%s (pid %d) stopped: %s", name, pid, _describe_exit(code))
                    failed |= code != 0
                    alive.remove(slot)
            self._wake.wait(_POLL_S)
            self._wake.clear()
        for slot in alive:
            assert slot.proc is not None
            name, pid = slot.spec.name, slot.proc.pid
            log.error("%s (pid %d) still running after %.0fs; killing it", name, pid, self.grace_s)
            slot.proc.kill()
            slot.proc.wait()
            failed = True
        return 1 if failed else 0

    @staticmethod
    def _send(slot: _Slot, sig: signal.Signals) -> None:
        if slot.proc is not None and slot.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(sig)


def launch(
    *,
    gpus: str | None = None,
    cpu: int | None = None,
    metrics_port: int = DEFAULT_METRICS_PORT,
    grace_s: float = DEFAULT_GRACE_S,
    celery_args: Sequence[str] = (),
) -> int:
    """Plan the workers and supervise them until shutdown; the launcher's exit status."""
    specs = plan(gpus=gpus, cpu=cpu, metrics_port=metrics_port, celery_args=celery_args)
    return Supervisor(specs, grace_s=grace_s).run()
