"""Fault injection for changewatch: services the tests own, and ways to break them.

Everything here runs on loopback and in temporary folders, never against the machine's
shared Redis (6379) or Postgres cluster (5432):

- ``RedisServer``: a private ``redis-server`` with an append-only file, so queued and
  unacknowledged jobs survive a restart (``stop``/``start``/``restart``, hard or clean);
- ``PostgresCluster``: a throwaway cluster made with the Debian ``initdb``/``pg_ctl``
  (run as the ``postgres`` user when we are root), stopped and started with ``pg_ctl``;
- ``TcpProxy``: a loopback TCP relay; stopping it makes the service behind it refuse
  connections (and resets open ones) while its data stays intact;
- ``pause``/``resume``/``paused``/``kill9``: SIGSTOP/SIGCONT/SIGKILL for a process, so a
  server hangs (clients time out instead of being refused) or a worker dies mid-task;
- ``FaultStack``: all of the above plus moto's S3 server and real workers, wired together
  with the shipped Celery settings, for ``tests/test_faults.py`` and ``bench/soak.py``;
- ``audit``: what Postgres says after the faults (statuses, duplicates, orphans).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis
from celery import Celery

from scripts.localstack import S3Server, Worker, free_port, wait_for_port

# ---------------------------------------------------------------------------------------
# processes


def _pid(proc: subprocess.Popen[Any] | int) -> int:
    return proc if isinstance(proc, int) else proc.pid


def pause(proc: subprocess.Popen[Any] | int) -> None:
    """SIGSTOP: the process keeps its sockets but answers nothing (clients time out)."""
    os.kill(_pid(proc), signal.SIGSTOP)


def resume(proc: subprocess.Popen[Any] | int) -> None:
    os.kill(_pid(proc), signal.SIGCONT)


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
    os.kill(_pid(proc), signal.SIGKILL)
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=30)


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


def postgres_bindir() -> Path | None:
    """The newest Debian PostgreSQL server binaries (``initdb``, ``pg_ctl``), if installed."""
    found = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------
# Redis


@dataclass
class RedisServer:
    """A private ``redis-server`` on a free loopback port, with an append-only file.

    ``appendonly yes`` keeps every acknowledged write (the queue, the unacked hash of
    late-acked jobs) across a restart; ``save ""`` turns RDB snapshots off so the AOF is
    the only persistence, as in a broker deployment that must not lose jobs.
    """

    dir: Path
    port: int = field(default_factory=free_port)
    binary: str = "redis-server"
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db), socket_timeout=5)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115  # kept by the child
        try:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.dir),
                    "--appendonly", "yes",
                    "--appendfsync", "everysec",
                    "--save", "",
                    "--daemonize", "no",
                    "--protected-mode", "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                # LOADING (AOF replay) answers PING with an error: wait until it is done.
                if self.client().ping():
                    return self
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on {self.port} not ready after {timeout}s")
            time.sleep(0.05)

    def stop(self, hard: bool = False) -> None:
        """SIGTERM: Redis flushes the AOF and exits; ``hard``: SIGKILL, a crash."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, down_s: float = 3.0, hard: bool = False) -> float:
        """Down for ``down_s`` seconds, then up on the same port; returns the outage in s."""
        began = time.monotonic()
        self.stop(hard=hard)
        time.sleep(down_s)
        self.start()
        return time.monotonic() - began


# ---------------------------------------------------------------------------------------
# Postgres


def _as_postgres() -> list[str]:
    """Run the cluster as ``postgres`` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, trust auth, loopback only.

    ``stop`` uses ``pg_ctl stop -m fast`` by default: every session is disconnected and
    the server shuts down cleanly. ``mode="immediate"`` is a crash: recovery replays the
    WAL at the next start.
    """

    root: Path
    port: int = field(default_factory=free_port)
    bindir: Path | None = field(default_factory=postgres_bindir)

    @classmethod
    def create(cls, prefix: str = "changewatch-pg-") -> PostgresCluster:
        """A new cluster in a fresh folder under the system temp dir, owned by postgres."""
        root = Path(tempfile.mkdtemp(prefix=prefix))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
        return cls(root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, tool: str, *args: str, timeout: float = 120.0) -> None:
        if self.bindir is None:
            raise FileNotFoundError("no /usr/lib/postgresql/*/bin with initdb")
        proc = subprocess.run(
            [*_as_postgres(), str(self.bindir / tool), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {proc.stderr or proc.stdout}")

    def init(self) -> PostgresCluster:
        self._run(
            "initdb",
            "-D", str(self.data),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        return self

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> PostgresCluster:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.root} -c max_connections=100"
            # Throwaway data: no fsync to disk (a clean or crash *process* stop loses nothing).
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        wait_for_port(self.port)
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down_s: float = 3.0, mode: str = "fast") -> float:
        """Down for ``down_s`` seconds, then up on the same port; returns the outage in s."""
        began = time.monotonic()
        self.stop(mode)
        time.sleep(down_s)
        self.start()
        return time.monotonic() - began

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# network


class TcpProxy:
    """A loopback TCP relay in front of a service.

    ``stop()`` closes the listener and resets every relayed connection: clients get
    "connection refused" or "connection reset", as when the service's host is down or
    unreachable, while the service behind it (and its data) is untouched. ``start()``
    listens on the same port again.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._accepting: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        self._accepting = threading.Thread(
            target=self._accept, args=(listener,), name=f"proxy-{self.port}", daemon=True
        )
        self._accepting.start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._accepting is not None:
            self._accepting.join(timeout=5)
            self._accepting = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                # RST rather than FIN: the peer sees the connection die, not a clean close.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                conn.close()

    @contextlib.contextmanager
    def down(self, seconds: float) -> Iterator[None]:
        self.stop()
        try:
            time.sleep(seconds)
            yield
        finally:
            self.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            pair = _Pair(client, upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        if pair.one_done():  # both directions finished: close both ends
            with self._lock:
                self._conns.difference_update((pair.a, pair.b))
            for sock in (pair.a, pair.b):
                with contextlib.suppress(OSError):
                    sock.close()


class _Pair:
    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.a, self.b = a, b
        self._left = 2
        self._lock = threading.Lock()

    def one_done(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left == 0


# ---------------------------------------------------------------------------------------
# the whole stack


BUCKET = "changewatch-faults"
ANGLES = ("front", "left", "right", "up", "down", "raised")
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
# One user's history: five sessions of three to six real Nikon photos (640x480) from
# ``photos/series``, two weeks apart. Every user in a fault run gets the same history.
SERIES_PLAN: tuple[tuple[str, ...], ...] = (
    ("DSCN0010", "DSCN0012", "DSCN0021"),
    ("DSCN0012", "DSCN0021", "DSCN0025", "DSCN0027"),
    ("DSCN0025", "DSCN0027", "DSCN0029", "DSCN0038", "DSCN0040"),
    ("DSCN0021", "DSCN0029", "DSCN0038", "DSCN0040", "DSCN0042", "DSCN0010"),
    ("DSCN0038", "DSCN0040", "DSCN0042"),
)


@dataclass(frozen=True)
class Job:
    user_id: uuid.UUID
    session_id: uuid.UUID
    index: int  # position in SERIES_PLAN
    captured_at: datetime
    images: dict[str, str]


def upload_series(client: Any, photos: Path, user: uuid.UUID) -> dict[str, str]:
    """The user's copy of every photo SERIES_PLAN uses: name -> s3:// URI."""
    uris = {}
    for name in sorted({n for session in SERIES_PLAN for n in session}):
        key = f"{user}/{name}.jpg"
        client.put_object(
            Bucket=BUCKET, Key=key, Body=(photos / "series" / f"{name}.jpg").read_bytes()
        )
        uris[name] = f"s3://{BUCKET}/{key}"
    return uris


def series_jobs(client: Any, photos: Path, user: uuid.UUID, count: int | None = None) -> list[Job]:
    """The first ``count`` sessions of SERIES_PLAN for ``user``, uploaded, in capture order."""
    uris = upload_series(client, photos, user)
    return [
        Job(
            user,
            uuid.uuid4(),
            i,
            T0 + timedelta(days=14 * i),
            {angle: uris[n] for angle, n in zip(ANGLES, names, strict=False)},
        )
        for i, names in enumerate(SERIES_PLAN[:count])
    ]


def celery_app(broker_url: str, backend_url: str) -> Celery:
    """A producer-side Celery app for a private broker (celeryconfig reads env at import)."""
    app = Celery("changewatch-faults")
    app.config_from_object("changewatch.celeryconfig")
    app.conf.update(
        broker_url=broker_url,
        # Celery prefers $CELERY_BROKER_URL and $CELERY_RESULT_BACKEND over any setting
        # (celery.app.utils.Settings), and the test session sets both for the machine's
        # Redis. The read/write URLs and the backend class are not overridden by them.
        broker_read_url=broker_url,
        broker_write_url=broker_url,
        result_backend=backend_url,
    )
    app.backend_cls = backend_url
    return app


@dataclass
class FaultStack:
    """Private Redis, Postgres and S3 (behind a proxy), and real workers that use them.

    Workers reach S3 through ``proxy`` so that an S3 outage can be a refusal (proxy
    down) as well as a hang (moto paused), without moto losing its in-memory objects.
    """

    root: Path
    dbname: str = "changewatch_faults"
    redis: RedisServer = field(init=False)
    postgres: PostgresCluster = field(init=False)
    s3: S3Server = field(init=False)
    proxy: TcpProxy = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    app: Celery = field(init=False)

    def start(self) -> FaultStack:
        from changewatch.schema.migrate import migrate  # keeps `import scripts.faults` light

        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.root / "redis").start()
        self.postgres = PostgresCluster.create()
        self.postgres.init().start()
        with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        migrate(self.database_url)
        self.s3 = S3Server().start()
        self.proxy = TcpProxy(self.s3.port).start()
        self.app = celery_app(self.broker_url, self.backend_url)
        client = self.s3_client()
        client.create_bucket(Bucket=BUCKET)
        return self

    @property
    def database_url(self) -> str:
        return self.postgres.url(self.dbname)

    @property
    def broker_url(self) -> str:
        return self.redis.url(0)

    @property
    def backend_url(self) -> str:
        return self.redis.url(1)

    def s3_client(self) -> Any:
        """A client that talks to moto directly (not through the proxy): uploads, checks."""
        import boto3

        env = self.s3.env()
        return boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def worker_env(self, concurrency: int = 2) -> dict[str, str]:
        return {
            **self.s3.env(),
            "AWS_ENDPOINT_URL_S3": self.proxy.endpoint,
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": self.backend_url,
            "DATABASE_URL": self.database_url,
            "CHANGEWATCH_MODEL_WEIGHTS": "random",
            "CHANGEWATCH_DEVICE": "cpu",
            "CHANGEWATCH_METRICS_PORT": "0",
            "CHANGEWATCH_WORKER_CONCURRENCY": str(concurrency),
        }

    def start_worker(self, name: str, concurrency: int = 2, wait: bool = True) -> Worker:
        worker = Worker(
            env=self.worker_env(concurrency),
            name=name,
            log_path=self.root / f"worker-{name}.log",
        ).start()
        self.workers.append(worker)
        if wait:
            worker.wait_ready(self.app)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                if worker.process is not None:
                    resume(worker.process)
                worker.stop(timeout=20)
        for step in (
            lambda: self.proxy.stop(),
            lambda: self.s3.process is not None and resume(self.s3.process),
            lambda: self.s3.stop(),
            lambda: self.redis.stop(),
            lambda: self.postgres.destroy(),
        ):
            with contextlib.suppress(Exception):
                step()
        with contextlib.suppress(Exception):
            self.app.close()


# ---------------------------------------------------------------------------------------
# what Postgres says afterwards


@dataclass
class Audit:
    sessions: int
    status: dict[str, int]
    min_attempts: int
    redelivered: int  # sessions that started more than once (attempts > 1)
    missing: int  # expected sessions without a row
    bad_analyses: int  # sessions without exactly one analyses row
    bad_embeddings: int  # sessions whose angle_embeddings count differs from their images
    bad_sums: int  # people whose running baseline sums differ from their stored embeddings
    duplicated: int  # more than one analyses row, or a repeated angle
    unordered: int  # analyses whose per_angle list is not in the contract's angle order
    orphans: dict[str, int]
    unfinished: list[str]

    @property
    def clean(self) -> bool:
        return (
            self.missing == 0
            and self.status.get("succeeded", 0) == self.sessions
            and self.min_attempts >= 1
            and self.bad_analyses == 0
            and self.bad_embeddings == 0
            and self.bad_sums == 0
            and self.unordered == 0
            and not any(self.orphans.values())
        )


def sums_mismatched(dsn: str, users: set[uuid.UUID]) -> int:
    """People whose running sums (kept incrementally by every write) are not exactly the
    sums of their stored embeddings, for any model."""
    from changewatch.worker.store import _load_totals, _rebuild_totals

    bad = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for user in users:
            models = conn.execute(
                "SELECT DISTINCT model_id FROM analyses WHERE user_id = %s", (user,)
            ).fetchall()
            for (model,) in models:
                kept = _load_totals(conn, user, model)
                truth = _rebuild_totals(conn, user, model)
                same = kept is not None and kept.sessions == truth.sessions
                for angle, (count, total) in truth.angles.items():
                    stored = kept.angles.get(angle) if kept else None
                    same = same and stored is not None and stored[0] == count
                    same = same and stored is not None and bool((stored[1] == total).all())
                bad += not same
    return bad


def audit(dsn: str, expected: Mapping[uuid.UUID, int]) -> Audit:
    """Check the sessions in ``expected`` (session id -> number of images) in Postgres."""
    ids = list(expected)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT s.session_id, s.status, s.attempts,
                   (SELECT count(*) FROM analyses a WHERE a.session_id = s.session_id),
                   (SELECT count(*) FROM angle_embeddings e WHERE e.session_id = s.session_id),
                   (SELECT count(DISTINCT e.angle) FROM angle_embeddings e
                     WHERE e.session_id = s.session_id),
                   s.user_id,
                   (SELECT a.per_angle FROM analyses a WHERE a.session_id = s.session_id)
              FROM sessions s WHERE s.session_id = ANY(%s)
            """,
            (ids,),
        ).fetchall()
        orphans = {}
        for table in ("angle_embeddings", "analyses"):
            row = conn.execute(
                f"SELECT count(*) FROM {table} t"  # fixed table names
                " WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = t.session_id)"
            ).fetchone()
            orphans[table] = int(row[0]) if row else 0
        row = conn.execute(
            "SELECT count(*) FROM comparisons c WHERE NOT EXISTS (SELECT 1 FROM sessions s"
            " WHERE s.session_id IN (c.current_session_id, c.previous_session_id))"
        ).fetchone()
        orphans["comparisons"] = int(row[0]) if row else 0
    status: dict[str, int] = {}
    bad_analyses = bad_embeddings = redelivered = duplicated = 0
    min_attempts = min((r[2] for r in rows), default=0)
    unfinished = []
    unordered = 0
    for sid, state, attempts, n_analyses, n_emb, n_distinct, _, per_angle in rows:
        listed = [p["angle"] for p in per_angle or []]
        unordered += listed != sorted(listed, key=ANGLES.index)
        status[state] = status.get(state, 0) + 1
        redelivered += attempts > 1
        bad_analyses += n_analyses != 1
        bad_embeddings += not (n_emb == n_distinct == expected[sid])
        duplicated += n_analyses > 1 or n_emb > n_distinct
        if state not in ("succeeded", "failed"):
            unfinished.append(f"{sid}:{state}")
    return Audit(
        sessions=len(ids),
        status=status,
        min_attempts=min_attempts,
        redelivered=redelivered,
        missing=len(ids) - len(rows),
        bad_analyses=bad_analyses,
        bad_embeddings=bad_embeddings,
        bad_sums=sums_mismatched(dsn, {r[6] for r in rows}),
        duplicated=duplicated,
        unordered=unordered,
        orphans=orphans,
        unfinished=unfinished,
    )


def whereabouts(dsn: str, broker: redis.Redis, ids: Sequence[uuid.UUID]) -> list[str]:
    """For each unfinished session: its status and attempts, and where its message is.

    ``queue`` (waiting), ``unacked`` (delivered, not acknowledged: the recovery sweep
    puts it back once no live worker holds it) or ``nowhere`` (the broker has lost it).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT session_id, status, attempts, task_id FROM sessions"
            " WHERE session_id = ANY(%s) AND status NOT IN ('succeeded', 'failed')",
            (list(ids),),
        ).fetchall()
    if not rows:
        return []
    queued = {json.loads(m)["headers"]["id"] for m in broker.lrange("changewatch", 0, -1)}
    unacked = {json.loads(v)[0]["headers"]["id"] for v in broker.hvals("unacked")}
    return [
        f"{sid} {status} attempts={attempts} message="
        + ("queue" if task in queued else "unacked" if task in unacked else "nowhere")
        for sid, status, attempts, task in rows
    ]


def finished_count(dsn: str, ids: Sequence[uuid.UUID]) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM sessions WHERE session_id = ANY(%s) GROUP BY status",
            (list(ids),),
        ).fetchall()
    return {state: int(n) for state, n in rows}


Scores = tuple[float, int, dict[str, float]]


def scores(dsn: str, ids: Sequence[uuid.UUID]) -> list[Scores]:
    """(change score, baseline count, {angle: score}) of each session, in ``ids`` order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = {
            sid: (
                float(change),
                int(count),
                {a["angle"]: float(a["change_score"]) for a in per_angle},
            )
            for sid, change, count, per_angle in conn.execute(
                "SELECT session_id, change_score, baseline_session_count, per_angle"
                " FROM analyses WHERE session_id = ANY(%s)",
                (list(ids),),
            )
        }
    return [rows[sid] for sid in ids]


def same_scores(got: Scores, want: Scores, tolerance: float = 1e-6) -> bool:
    """Equal baseline counts and angles, every score within ``tolerance``."""
    (a, na, pa), (b, nb, pb) = got, want
    return (
        na == nb
        and pa.keys() == pb.keys()
        and abs(a - b) <= tolerance
        and all(abs(pa[k] - pb[k]) <= tolerance for k in pa)
    )
