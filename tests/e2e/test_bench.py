"""The benchmark runs end to end on real services and reports sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.harness.services import ROOT


def test_bench_smoke(tmp_path: Path, photos: Path, broker: str, database_url: str) -> None:
    """`python -m bench` finishes, every session succeeds, and the report is complete."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--sessions",
            "3",
            "--concurrency",
            "2",
            "--processes",
            "2",
            "--model-seconds",
            "0.5",
            "--models",
            "resnet50",
            "--precisions",
            "auto",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    # The fast run as `launch --cpu 2` lays workers out: two processes sharing the cores.
    assert [r["label"] for r in report["runs"]] == [
        "resnet50-reference",
        "resnet50-fast-auto-c2-p2",
    ]
    assert [r["processes"] for r in report["runs"]] == [1, 2]
    for run in report["runs"]:
        assert run["succeeded"] == run["sessions"] == 3
        assert run["sessions_per_s"] > 0 and run["latency_p95_s"] >= run["latency_p50_s"] > 0
        assert run["stage_s_per_session"]["decode"] > 0 and run["peak_rss_bytes"] > 0
        assert run["machine_cpu_s_per_session"] >= run["worker_cpu_s_per_session"] > 0
        assert 0 < run["cold_start_s"] < 120
    summary = report["models"]["resnet50"]
    assert summary["speedup_auto_vs_reference"] > 0
    assert all(v > 0 for v in summary["model_only_images_per_s"]["auto"].values())
    assert (tmp_path / "throughput.png").stat().st_size > 1000
    assert "sessions/s" in (tmp_path / "bench.md").read_text()
