"""The benchmark's markdown table and plot, and how every benchmark saves its report."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness.services import ROOT


def git_commit() -> str:
    """The commit a result was measured at; every recorded run names one."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def save(
    report: dict[str, Any],
    out: Path,
    stem: str,
    table: Callable[[dict[str, Any]], str],
    draw: Callable[[dict[str, Any], Path], None],
    png: str,
) -> None:
    """``out/STEM.json``, ``out/STEM.md`` and ``out/PNG``, then the table on stdout."""
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    text = table(report)
    (out / f"{stem}.md").write_text(text)
    draw(report, out / png)
    print(text)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"changewatch benchmark, {report['date']}, commit {report['commit']}, "
        f"{report['machine']['cpus']} CPUs, device {report['machine']['device']}, "
        f"weights {report['machine']['weights']}",
        "",
        "| run | concurrency | sessions/s | s/session | latency p50 / p95 (s) | "
        "service p50 / p95 (s) | fetch | decode | batch | embed | score | store | images/batch | "
        "worker CPU s/session | machine CPU s/session | peak RSS (GiB) |",
        "| --- " + "| ---: " * 15 + "|",
    ]
    for run in report["runs"]:
        st = run["stage_s_per_session"]
        lines.append(
            f"| {run['label']} | {run['concurrency']} | {run['sessions_per_s']:.2f} | "
            f"{run['s_per_session']:.3f} | "
            f"{run['latency_p50_s']:.2f} / {run['latency_p95_s']:.2f} | "
            f"{run['service_p50_s']:.2f} / {run['service_p95_s']:.2f} | "
            + " | ".join(
                f"{st[k]:.3f}" for k in ("fetch", "decode", "batch", "embed", "score", "store")
            )
            + f" | {run['mean_batch_images']:.1f} | {run['worker_cpu_s_per_session']:.3f}"
            f" | {run.get('machine_cpu_s_per_session', 0.0):.3f}"
            f" | {run['peak_rss_bytes'] / 2**30:.2f} |"
        )
    ceiling = ", ".join(
        f"batch {b}: {v:.1f} img/s" for b, v in report["model_only_images_per_s"].items()
    )
    lines += [
        "",
        "- efficientnet_lite0 model-only: "
        + ", ".join(
            f"batch {b}: {v:.1f} img/s"
            for b, v in report.get("lite0_model_only_images_per_s", {}).items()
        ),
        f"- model-only ceiling: {ceiling}; "
        f"{report['model_only_s_per_session']:.3f} s per six-image session",
        f"- best fast run ({report['best_fast_run']}) vs reference: "
        f"**{report['speedup_vs_reference']:.2f}x** sessions/s",
        f"- end-to-end time per session / model-only: **{report['e2e_over_model_only']:.2f}x**"
        f" (vs the seed's fp32 batch-6 model step, "
        f"{report['model_only_fp32_s_per_session']:.3f} s: "
        f"**{report['e2e_over_model_only_fp32']:.2f}x**)",
        f"- peak worker RSS (fast runs): **{report['peak_worker_rss_gib']:.2f} GiB**",
        "",
        "Stage columns are seconds per session (embed is amortized over the batch). "
        "Machine CPU counts every process on the machine (the worker, the S3 server, "
        "Redis, Postgres, the benchmark itself): with N cores, s/session can never be "
        "below machine CPU s/session / N.",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fast = [r for r in report["runs"] if r["pipeline"] == "fast"]
    reference = next(r for r in report["runs"] if r["pipeline"] == "reference")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["concurrency"] for r in fast],
        [r["sessions_per_s"] for r in fast],
        "o-",
        label="fast pipeline",
    )
    ax.axhline(
        reference["sessions_per_s"], color="gray", linestyle="--", label="seed-faithful reference"
    )
    ax.axhline(
        1 / report["model_only_s_per_session"],
        color="green",
        linestyle=":",
        label="model-only ceiling",
    )
    ax.set_xlabel("worker concurrency (sessions in flight)")
    ax.set_ylabel("sessions / s")
    ax.set_xscale("log", base=2)
    ax.legend()
    ax.set_title(f"changewatch, {report['machine']['device']}, commit {report['commit']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
