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


def _rates(rates: dict[str, float]) -> str:
    return ", ".join(f"batch {b}: {v:.1f}" for b, v in rates.items())


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"changewatch benchmark, {report['date']}, commit {report['commit']}, "
        f"{machine['cpus']} CPUs ({machine.get('cpu', '?')}, {machine.get('isa', '?')}), "
        f"device {machine['device']}, ResNet50 weights {machine['weights']}, Lite0 ImageNet",
        "",
        "| run | processes | concurrency | sessions/s | s/session | cold start (s) | "
        "latency p50 / p95 (s) | service p50 / p95 (s) | fetch | decode | batch | embed | "
        "score | store | images/batch | worker CPU s/session | machine CPU s/session | "
        "peak RSS (GiB) |",
        "| --- " + "| ---: " * 17 + "|",
    ]
    for run in report["runs"]:
        st = run["stage_s_per_session"]
        lines.append(
            f"| {run['label']} | {run.get('processes', 1)} | {run['concurrency']} | "
            f"{run['sessions_per_s']:.2f} | "
            f"{run['s_per_session']:.3f} | {run.get('cold_start_s', 0.0):.1f} | "
            f"{run['latency_p50_s']:.2f} / {run['latency_p95_s']:.2f} | "
            f"{run['service_p50_s']:.2f} / {run['service_p95_s']:.2f} | "
            + " | ".join(
                f"{st[k]:.3f}" for k in ("fetch", "decode", "batch", "embed", "score", "store")
            )
            + f" | {run['mean_batch_images']:.1f} | {run['worker_cpu_s_per_session']:.3f}"
            f" | {run.get('machine_cpu_s_per_session', 0.0):.3f}"
            f" | {run['peak_rss_bytes'] / 2**30:.2f} |"
        )
    lines.append("")
    for model, m in report["models"].items():
        rates = m["model_only_images_per_s"]
        parts = [f"**{model}**"]
        for key, name in (
            ("seed", "seed fp32"),
            ("fp32", "fast fp32"),
            ("auto", "fast auto"),
            ("int8", "fast INT8"),
        ):
            if key in rates:
                parts.append(f"{name} {_rates(rates[key])} img/s")
        if "int8_over_auto_model_only_batch6" in m:
            parts.append(
                f"INT8 / auto at batch 6: **{m['int8_over_auto_model_only_batch6']:.2f}x**"
            )
        lines.append("- model-only, " + "; ".join(parts))
        for precision in ("auto", "int8"):
            if f"best_{precision}" in m:
                lines.append(
                    f"- {model}, best fast {precision} run ({m[f'best_{precision}']}) vs "
                    f"reference: **{m[f'speedup_{precision}_vs_reference']:.2f}x** sessions/s"
                )
        if not m["int8_allowed"]:
            lines.append(f"- {model}: INT8 refused (worker.int8.REFUSED), not run end to end")
    if report.get("int8_prepare_s"):
        lines.append(
            "- prepare-model (INT8 build, or 0 s when cached): "
            + ", ".join(f"{k} {v:.0f} s" for k, v in report["int8_prepare_s"].items())
        )
    lines += [
        f"- peak worker RSS (fast runs, all of a run's processes together): "
        f"**{report['peak_worker_rss_gib']:.2f} GiB**",
        "",
        "Stage columns are seconds per session (embed is amortized over the batch). "
        "With several worker processes (`launch --cpu N`), worker CPU and RSS are their "
        "sums, and the stages are per session over all of them. "
        "Machine CPU counts every process on the machine (the worker, the S3 server, "
        "Redis, Postgres, the benchmark itself): with N cores, s/session can never be "
        "below machine CPU s/session / N. Cold start: worker process start to its first "
        "finished job, that job already queued.",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in report["models"]:
        mine = [r for r in report["runs"] if r.get("model", "resnet50") == model]
        for precision in ("auto", "int8"):
            fast = [r for r in mine if r["pipeline"] == "fast" and r["precision"] == precision]
            for processes in sorted({r.get("processes", 1) for r in fast}):
                mine_p = [r for r in fast if r.get("processes", 1) == processes]
                ax.plot(
                    [r["concurrency"] for r in mine_p],
                    [r["sessions_per_s"] for r in mine_p],
                    "o-",
                    label=f"{model} fast {precision}" + (f" x{processes}" if processes > 1 else ""),
                )
        for r in mine:
            if r["pipeline"] == "reference":
                ax.axhline(r["sessions_per_s"], linestyle="--", color="gray", linewidth=0.8)
    ax.set_xlabel("worker concurrency (sessions in flight); dashed: references")
    ax.set_ylabel("sessions / s")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=7)
    ax.set_title(f"changewatch, {report['machine']['device']}, commit {report['commit']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
