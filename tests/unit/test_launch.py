"""``python -m changewatch.worker launch`` without services: counting GPUs and MIG instances,
planning one pinned worker per device, and supervising children that crash or ignore SIGTERM
(the launcher with real workers is in tests/e2e/test_launch.py)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.harness.services import ROOT
from changewatch.worker import launch
from changewatch.worker.launch import (
    LaunchError,
    Supervisor,
    WorkerSpec,
    parse_nvidia_smi,
    parse_visible_devices,
    plan,
)

NVIDIA_SMI = """\
GPU 0: NVIDIA H200 (UUID: GPU-5d2c1e0a-0000-4000-8000-000000000000)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-8f3b0c11-0000-4000-8000-000000000001)
  MIG 3g.20gb     Device  0: (UUID: MIG-1a2b3c4d-0000-5000-8000-000000000000)
  MIG 3g.20gb     Device  1: (UUID: MIG-1a2b3c4d-0000-5000-8000-000000000001)
GPU 2: NVIDIA H200 (UUID: GPU-5d2c1e0a-0000-4000-8000-000000000002)
"""


def test_gpus_are_counted_without_torch() -> None:
    """nvidia-smi's GPUs by index, a MIG-partitioned GPU by its instances; CUDA's own rules."""
    assert parse_nvidia_smi(NVIDIA_SMI) == [
        "0",
        "MIG-1a2b3c4d-0000-5000-8000-000000000000",
        "MIG-1a2b3c4d-0000-5000-8000-000000000001",
        "2",
    ]
    assert parse_nvidia_smi("No devices were found\n") == []
    assert parse_visible_devices("0, 2,GPU-x") == ["0", "2", "GPU-x"]
    assert parse_visible_devices("1,-1,2") == ["1"] and parse_visible_devices("") == []


def test_plan_pins_one_device_port_and_name_per_worker() -> None:
    specs = plan(gpus="all", environ={"CUDA_VISIBLE_DEVICES": "3,GPU-x"}, metrics_port=9900)
    assert [s.name for s in specs] == ["gpu0", "gpu1"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["3", "GPU-x"]
    assert [s.env["CHANGEWATCH_METRICS_PORT"] for s in specs] == ["9900", "9901"]
    assert {s.env["CHANGEWATCH_DEVICE"] for s in specs} == {"cuda"}
    assert list(specs[1].argv[-2:]) == ["--hostname", "gpu1@%h"]
    # Ordinals count within an inherited CUDA_VISIBLE_DEVICES, as CUDA's do.
    (one,) = plan(gpus="1", environ={"CUDA_VISIBLE_DEVICES": "4,5"}, metrics_port=0)
    assert one.name == "gpu1" and one.env["CUDA_VISIBLE_DEVICES"] == "5"
    assert one.env["CHANGEWATCH_METRICS_PORT"] == "0"
    cpus = plan(cpu=2, environ={}, celery_args=["--concurrency", "1"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in cpus] == ["", ""]
    assert {s.env["CHANGEWATCH_DEVICE"] for s in cpus} == {"cpu"}
    assert list(cpus[0].argv[-4:]) == ["--hostname", "cpu0@%h", "--concurrency", "1"]
    for bad in ({"gpus": "0,0"}, {"gpus": "2", "environ": {"CUDA_VISIBLE_DEVICES": "0"}},
                {"cpu": 0}, {"cpu": 1, "celery_args": ["-n", "x@%h"]}):  # fmt: skip
        with pytest.raises(LaunchError):
            plan(**bad)  # type: ignore[arg-type]


def test_no_gpu_is_a_clear_error_pointing_at_cpu() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "changewatch.worker", "launch", "--gpus", "all"],
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "no GPU found" in proc.stderr and "--cpu N" in proc.stderr


def _child(code: str) -> WorkerSpec:
    return WorkerSpec("fake0", {}, [sys.executable, "-c", code])


def test_a_crash_looping_worker_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that cannot start (bad weights, broken GPU) is not restarted forever."""
    monkeypatch.setattr(launch, "BACKOFF_START_S", 0.01)
    started = time.monotonic()
    assert Supervisor([_child("raise SystemExit(3)")]).run() == 1
    assert time.monotonic() - started < 20  # five quick failures, 0.01 s ... 0.08 s apart
    # A worker that exits 0 by itself (celery control shutdown) is done, not restarted.
    assert Supervisor([_child("pass")]).run() == 0


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    """Shutdown is bounded: past the grace, SIGKILL, and the exit status says so."""
    # The child ignores SIGTERM, then sends one to its parent, this process: the
    # supervisor's handler (installed before any child starts) begins the shutdown.
    stubborn = _child(
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " os.kill(os.getppid(), signal.SIGTERM); time.sleep(60)"
    )
    started = time.monotonic()
    assert Supervisor([stubborn], grace_s=0.5).run() == 1
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "100000 100000\n"}, 1.0),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
        # A systemd unit (CPUQuota=300%) in a slice limited to one CPU: the tighter holds.
        (
            {
                "self": "0::/work.slice/changewatch.service\n",
                "work.slice/cpu.max": "100000 100000\n",
                "work.slice/changewatch.service/cpu.max": "300000 100000\n",
            },
            1.0,
        ),
        ({"self": "0::/other.slice\n", "work.slice/cpu.max": "100000 100000\n"}, None),
    ],
)
def test_cpu_auto_stays_within_a_cgroups_cpu_quota(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    """A container or a systemd unit limited to fewer CPUs than its host shows (``--cpus``,
    a Kubernetes limit, ``CPUQuota``) gets that many workers, not one per host core: each
    worker holds a model (~1.2 GiB)."""
    root, membership = tmp_path / "cgroup", tmp_path / "self"
    for name, text in files.items():
        path = membership if name == "self" else root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert launch.cgroup_cpu_quota(root, membership) == quota
    cores = len(os.sched_getaffinity(0))
    expected = cores if quota is None else max(1, min(cores, math.ceil(quota)))
    assert launch.usable_cpus(root, membership) == expected
    assert len(plan(cpu=launch.usable_cpus(root, membership), environ={})) == expected


def test_cpu_auto_is_one_worker_per_usable_core() -> None:
    """`launch --cpu auto` gives each core its own process (and GIL), one thread each: the
    layout that kept both cores busy with the INT8 model (docs/benchmarks.md)."""
    from changewatch.worker.__main__ import build_parser

    cores = launch.usable_cpus()  # the affinity, within any CPU quota (the test above)
    args = build_parser().parse_args(["launch", "--cpu", "auto"])
    assert args.cpu == cores
    specs = plan(cpu=args.cpu, environ={})
    assert [s.name for s in specs] == [f"cpu{i}" for i in range(cores)]
    assert {s.env["OMP_NUM_THREADS"] for s in specs} == {"1"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", "--cpu", "all"])
