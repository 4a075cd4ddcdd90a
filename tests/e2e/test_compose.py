"""Offline checks that docker-compose.yml would bring up a working changewatch stack.

No Docker engine is needed: the file is parsed with PyYAML (which resolves the shared
``x-changewatch-env`` anchor) and ``${VAR:-default}`` is expanded to its default, i.e. what
``docker compose up`` does on a machine with no overrides.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from changewatch.schema.__main__ import build_parser as schema_parser

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

# What the code reads from the environment to reach the broker, Postgres and S3.
REQUIRED_WORKER_ENV = (
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "DATABASE_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "CHANGEWATCH_MODEL_WEIGHTS",
    "CHANGEWATCH_DEVICE",
)

_VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _defaults(value: object) -> str:
    """Expand ``${VAR:-default}`` to its default, as compose does when VAR is unset."""
    return _VAR.sub(lambda m: m.group(2) or "", str(value)).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: _defaults(value) for key, value in raw.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def _condition(service: dict[str, Any], dependency: str) -> str | None:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return "service_started" if dependency in deps else None
    return (deps.get(dependency) or {}).get("condition")


def test_built_services_have_a_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    """`docker compose build` fails outright if a service's Dockerfile is missing."""
    built = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert {"worker", "flower", "migrate"} <= built.keys()
    for name, build in built.items():
        if isinstance(build, str):
            build = {"context": build}
        dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"


def test_commands_name_modules_in_this_repo(services: dict[str, dict[str, Any]]) -> None:
    """A typo in `-A changewatch.worker` or `-m changewatch.schema` only shows up as a
    crash loop at deploy time."""
    for name in ("worker", "flower"):
        cmd = _command(services[name])
        assert cmd[:2] == ["celery", "-A"], f"{name}: {cmd}"
        assert cmd[2].startswith("changewatch."), f"{name}: {cmd}"
        folder = ROOT / cmd[2].removeprefix("changewatch.")
        assert folder.is_dir(), f"{name}: no package {cmd[2]!r} in the repo"
    assert _command(services["worker"])[3] == "worker"
    assert _command(services["flower"])[3] == "flower"
    cmd = _command(services["migrate"])
    assert cmd[:4] == ["python", "-m", "changewatch.schema", "migrate"]
    assert (ROOT / "schema").is_dir()
    args = schema_parser().parse_args(
        cmd[3:]
    )  # the flags `python -m changewatch.schema` really takes
    assert args.worker_login and args.producer_login


def test_a_reaper_resends_lost_jobs_and_keeps_running(
    services: dict[str, dict[str, Any]],
) -> None:
    """Without it, a message lost in a Redis crash leaves its session queued forever."""
    from changewatch.producer.__main__ import build_parser

    reaper = services["reaper"]
    cmd = _command(reaper)
    assert cmd[:4] == ["python", "-m", "changewatch.producer", "reap"], cmd
    args = build_parser().parse_args(cmd[3:])  # the flags the CLI really takes
    assert args.every and args.every > 0
    assert reaper.get("restart") == "unless-stopped"
    assert _env(reaper).get("CELERY_BROKER_URL") == _env(services["worker"]).get(
        "CELERY_BROKER_URL"
    )
    assert _condition(reaper, "migrate") == "service_completed_successfully"


def test_worker_gets_every_setting_it_reads(services: dict[str, dict[str, Any]]) -> None:
    """A missing variable silently falls back to 127.0.0.1 defaults inside the container."""
    env = _env(services["worker"])
    missing = [key for key in REQUIRED_WORKER_ENV if not env.get(key)]
    assert not missing, f"worker lacks {missing}"
    assert env["CHANGEWATCH_DEVICE"] == "cuda"


def test_urls_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    """Broker, database and S3 URLs must name services of this file, not localhost."""
    for name in ("worker", "flower", "migrate", "reaper"):
        env = _env(services[name])
        for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DATABASE_URL"):
            if name == "flower" and key == "DATABASE_URL":
                continue  # Flower reads the broker only
            host = urlsplit(env[key]).hostname
            assert host in services, f"{name}: {key} points at {host!r}"
    assert urlsplit(_env(services["worker"])["AWS_ENDPOINT_URL_S3"]).hostname in services


def test_credentials_match_between_services(services: dict[str, dict[str, Any]]) -> None:
    """Migrations run as the owner Postgres was given; the worker and the reaper log in as
    the least-privilege roles migrate creates, with the passwords it set; MinIO's match."""
    worker, pg, minio = (_env(services[n]) for n in ("worker", "postgres", "minio"))
    migrate = _env(services["migrate"])
    owner = urlsplit(migrate["DATABASE_URL"])
    assert (owner.username, owner.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    cmd = _command(services["migrate"])
    for service, url in (("worker", worker), ("producer", _env(services["reaper"]))):
        db = urlsplit(url["DATABASE_URL"])
        assert db.username == cmd[cmd.index(f"--{service}-login") + 1], service
        assert db.username != pg["POSTGRES_USER"], f"{service} logs in as the schema's owner"
        assert db.password == migrate[f"CHANGEWATCH_{service.upper()}_DB_PASSWORD"], service
        assert db.path.lstrip("/") == pg["POSTGRES_DB"]
    assert worker["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert worker["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    bucket = _env(services["minio-init"])["CHANGEWATCH_BUCKET"]
    assert bucket in worker["CHANGEWATCH_ALLOWED_BUCKETS"].split(",")


def test_worker_reserves_an_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    """Without a device reservation the container sees no GPU and CUDA init fails."""
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_torch_cache_is_a_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """ImageNet weights should download once, into TORCH_HOME, not on every restart."""
    match = re.search(r"TORCH_HOME=(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert match, "Dockerfile does not set TORCH_HOME"
    mounts = dict(v.split(":")[:2] for v in services["worker"]["volumes"])
    assert match.group(1) in mounts.values()
    source = next(src for src, dst in mounts.items() if dst == match.group(1))
    assert source in compose["volumes"]


def test_flower_requires_a_login(services: dict[str, dict[str, Any]]) -> None:
    """Flower can revoke and inspect tasks; it must not be open to anyone who finds the port."""
    user, _, password = _env(services["flower"]).get("FLOWER_BASIC_AUTH", "").partition(":")
    assert user and password


def test_one_shot_jobs_gate_the_worker(services: dict[str, dict[str, Any]]) -> None:
    """The worker must not start before the schema and the bucket exist."""
    for job in ("migrate", "minio-init"):
        assert services[job].get("restart", "no") == "no", f"{job} would restart forever"
        assert _condition(services["worker"], job) == "service_completed_successfully"
    assert _condition(services["worker"], "redis") == "service_healthy"
    assert _condition(services["migrate"], "postgres") == "service_healthy"
    assert "--ignore-existing" in " ".join(_command(services["minio-init"]))


def test_backing_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    """`condition: service_healthy` hangs forever on a service without a healthcheck."""
    for name in ("redis", "postgres", "minio"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file() -> None:
    """docker-compose's own schema validation catches keys and types PyYAML cannot."""
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_gpu_worker_has_its_own_device_node_name_and_health(
    services: dict[str, dict[str, Any]],
) -> None:
    """One worker per GPU: distinct device ids and node names, each with a readiness check."""
    workers = {
        name: svc for name, svc in services.items() if _env(svc).get("CHANGEWATCH_DEVICE") == "cuda"
    }
    assert len(workers) >= 2
    devices, nodes = [], []
    for svc in workers.values():
        reservation = svc["deploy"]["resources"]["reservations"]["devices"][0]
        devices += reservation["device_ids"]
        nodes.append(svc["command"][svc["command"].index("--hostname") + 1])
        assert svc["healthcheck"]["test"][1:] == ["python", "-m", "changewatch.worker", "health"]
    assert len(set(devices)) == len(devices) and len(set(nodes)) == len(nodes)
    assert (ROOT / "worker" / "health.py").is_file()


def test_cpu_workers_run_one_per_core_after_the_int8_program_is_built(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """A host without a GPU gets one worker process per core (``launch --cpu auto``), the
    layout INT8 needs, started only after ``model-prepare`` has put the compiled program on
    a volume, so no worker compiles it at start and a restart only loads it."""
    from changewatch.worker.__main__ import build_parser

    cpu, prepare = services["worker-cpu"], services["model-prepare"]
    assert cpu["profiles"] == prepare["profiles"] == ["cpu"]
    assert "deploy" not in cpu  # no GPU reservation: it must start on a host without one
    env = _env(cpu)
    missing = [key for key in REQUIRED_WORKER_ENV if not env.get(key)]
    assert not missing, f"worker-cpu lacks {missing}"
    assert env["CHANGEWATCH_DEVICE"] == "cpu" and _env(prepare) == env
    cmd = _command(cpu)
    assert cmd[:3] == ["python", "-m", "changewatch.worker"], cmd
    cut = cmd.index("--")
    args = build_parser().parse_args(cmd[3:cut])  # the flags the launcher really takes
    assert args.command == "launch" and args.gpus is None and args.cpu >= 1
    grace = cpu["stop_grace_period"]
    assert grace.endswith("m") and args.grace < int(grace[:-1]) * 60  # jobs finish first
    assert cpu["healthcheck"]["test"][1:] == ["python", "-m", "changewatch.worker", "health"]
    assert _command(prepare)[3:] == ["prepare-model"]
    assert prepare.get("restart") == "no"
    assert _condition(cpu, "model-prepare") == "service_completed_successfully"
    for job in ("migrate", "minio-init"):
        assert _condition(cpu, job) == "service_completed_successfully"
    assert cpu["build"] == prepare["build"] and "INT8" in cpu["build"]["args"]
    mounts = dict(v.split(":")[:2] for v in cpu["volumes"])
    assert cpu["volumes"] == prepare["volumes"]
    # The default CHANGEWATCH_MODEL_CACHE of the image's user, a named volume.
    assert "/home/changewatch/.cache/changewatch" in (ROOT / "Dockerfile").read_text()
    source = next(
        src for src, dst in mounts.items() if dst == "/home/changewatch/.cache/changewatch"
    )
    assert source in compose["volumes"]
