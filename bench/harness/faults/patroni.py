"""A private Patroni cluster: one etcd and two Postgres nodes with synchronous replication.

All on free loopback ports in a temporary folder, from Debian's ``patroni`` (3.0) and
``etcd-server`` (3.4), which ``scripts/setup.sh`` installs, and the Postgres server
binaries. Patroni talks to etcd through its v3 API (``etcd3:``; etcd 3.4 has the v2 API
off). ``synchronous_mode: true`` makes every commit wait for the standby, and Patroni
promotes only that standby, so a job the database said was committed survives the
failover. The timings are short so a test sees a promotion within seconds: ``ttl`` 10,
``loop_wait`` 2, ``retry_timeout`` 4 (``loop_wait + 2 * retry_timeout <= ttl``), and
``primary_start_timeout`` 0: a crashed primary is failed over at once instead of being
restarted in place for up to five minutes.

Postgres refuses to run as root, so when we are root Patroni (and the Postgres it
starts) runs as the ``postgres`` user, as Debian's ``patroni@.service`` does; ``setpriv``
execs Patroni itself, so the process we hold is Patroni's and a SIGKILL reaches it.

Two faults, the ``kill_primary`` kinds:

- ``postgres``: SIGKILL of the primary's postmaster. Its Patroni sees Postgres gone,
  gives up the leader key, the sync standby is promoted, and the old primary comes back
  as a replica by itself (``pg_rewind`` if its timeline forked);
- ``node``: SIGKILL of the primary's Patroni and postmaster together, a lost host.
  Nobody releases the leader key: the standby is promoted once it expires (``ttl``).
  The harness then starts that node's Patroni again, as a supervisor would, and it
  rejoins as a replica.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import process
from bench.harness.faults.postgres_cluster import postgres_bindir
from bench.harness.process import free_port

SCOPE = "changewatch"
TTL_S, LOOP_WAIT_S, RETRY_TIMEOUT_S = 10, 2, 4


def patroni_available() -> str | None:
    """None when Patroni, etcd and the Postgres server binaries are all here, else why not."""
    for binary in ("patroni", "etcd"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (Debian: apt-get install patroni etcd-server)"
    if postgres_bindir() is None:
        return "PostgreSQL server binaries (initdb) not found"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is needed to run Patroni as postgres"
    return None


def _as_postgres() -> list[str]:
    """Exec as ``postgres`` when we are root (no fork: the pid we hold is the program's)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


@dataclass
class PatroniNode:
    """One Patroni and the Postgres it runs; ``rest`` is its REST API port."""

    name: str
    dir: Path
    port: int = field(default_factory=free_port)
    rest: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def config(self) -> Path:
        return self.dir / "patroni.yml"

    def start(self) -> PatroniNode:
        env = {**os.environ, "HOME": str(self.dir), "PATH": os.environ.get("PATH", "")}
        self.process = process.start(
            [*_as_postgres(), "patroni", str(self.config)], log=self.dir / "patroni.log", env=env
        )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_primary(self) -> bool:
        """``GET /primary`` answers 200 only on the leader running as a primary."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest}/primary", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def kill_postgres(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """The host is gone: Patroni and its postmaster SIGKILLed (the backends follow)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=30)
            self.process = None
        self.kill_postgres()

    def stop(self) -> None:
        """SIGTERM: Patroni stops its Postgres (fast) and exits; SIGKILL after 60 s."""
        process.stop(self.process, 60)
        self.process = None
        # Whatever outlived Patroni (it was SIGKILLed, or timed out) must not stay up.
        pid = self.postmaster_pid()
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class PatroniCluster:
    """One etcd and two Patroni-managed Postgres nodes, synchronous replication.

    ``url(dbname)`` is the multi-host libpq URL changewatch is given; with
    ``target_session_attrs=read-write`` libpq connects to whichever node is the primary.
    """

    dir: Path
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    nodes: list[PatroniNode] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    # A namespace of its own in etcd: clusters of parallel runs never see each other.
    namespace: str = field(default_factory=lambda: f"/changewatch-{uuid.uuid4().hex[:8]}/")

    @classmethod
    def create(cls, prefix: str = "changewatch-patroni-") -> PatroniCluster:
        """In a fresh folder under the system temp dir (a folder of root's, mode 0700,
        would keep the ``postgres`` user out)."""
        return cls(Path(tempfile.mkdtemp(prefix=prefix)))

    def start(self, timeout: float = 180.0) -> PatroniCluster:
        self.dir.mkdir(parents=True, exist_ok=True)
        _own(self.dir)
        self._start_etcd()
        self.nodes = [PatroniNode(f"pg{i}", self.dir / f"pg{i}") for i in range(2)]
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            _own(node.dir)
            node.config.write_text(self._config(node))
        # The first node bootstraps (initdb) and takes the leader key; the second then
        # copies it with pg_basebackup. Starting both at once works too, but one at a
        # time keeps the 2-core machine's load and the logs simple.
        self.nodes[0].start()
        process.wait_until(
            self.nodes[0].is_primary, timeout, "Patroni never bootstrapped a primary",
            self.nodes[0].process, exited="patroni exited with {code} (see patroni.log)",
        )  # fmt: skip
        self.nodes[1].start()
        process.wait_until(self.healthy, timeout, "the replica never became the sync standby")
        return self

    def _start_etcd(self) -> None:
        data = self.dir / "etcd"
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self.etcd = process.start(
            [
                "etcd",
                "--name", "etcd0",
                "--data-dir", str(data),
                "--listen-client-urls", client,
                "--advertise-client-urls", client,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"etcd0={peer}",
                "--initial-cluster-state", "new",
                "--initial-cluster-token", self.namespace.strip("/"),
            ],
            log=self.dir / "etcd.log",
        )  # fmt: skip
        process.wait_for_port(self.etcd_port, 60, self.etcd)

    def _config(self, node: PatroniNode) -> str:
        """Patroni's YAML (JSON is YAML): the minimal two-node setup of Patroni's own
        ``postgres0.yml``, on loopback, with the bootstrap settings for the whole cluster."""
        bindir = postgres_bindir()
        hba = [
            "local all all trust",
            "host all all 127.0.0.1/32 trust",
            "host replication replicator 127.0.0.1/32 trust",
        ]
        config = {
            "scope": SCOPE,
            "namespace": self.namespace,
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{node.rest}",
                "connect_address": f"127.0.0.1:{node.rest}",
            },
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL_S,
                    "loop_wait": LOOP_WAIT_S,
                    "retry_timeout": RETRY_TIMEOUT_S,
                    "maximum_lag_on_failover": 1048576,
                    "primary_start_timeout": 0,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "max_connections": 100,
                            "wal_log_hints": "on",
                            "wal_compression": "zstd",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "trust"}],
                "pg_hba": hba,
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.port}",
                "connect_address": f"127.0.0.1:{node.port}",
                "data_dir": str(node.data),
                "bin_dir": str(bindir),
                "pgpass": str(node.dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "postgres"},
                    "replication": {"username": "replicator", "password": "replicator"},
                    "rewind": {"username": "postgres", "password": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(node.dir)},
                "pg_hba": hba,
                "basebackup": [{"checkpoint": "fast"}],
            },
        }
        return json.dumps(config, indent=2)

    def url(self, dbname: str = "postgres") -> str:
        """The multi-host URL: libpq tries each node and keeps the one that takes writes."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"postgresql://postgres@{hosts}/{dbname}?target_session_attrs=read-write"

    def primary(self) -> PatroniNode | None:
        return next((n for n in self.nodes if n.is_primary()), None)

    def healthy(self) -> bool:
        """A primary, and the other node streaming as its synchronous standby."""
        members = self._cluster().get("members", [])
        roles = [m.get("role") for m in members]
        synced = [
            m
            for m in members
            if m.get("role") == "sync_standby" and m.get("state") in ("running", "streaming")
        ]
        return roles.count("leader") == 1 and len(synced) == 1 and self.primary() is not None

    def _cluster(self) -> dict[str, Any]:
        for node in self.nodes:
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                url = f"http://127.0.0.1:{node.rest}/cluster"
                with urllib.request.urlopen(url, timeout=2) as r:
                    return dict(json.loads(r.read()))
        return {}

    def kill_primary(self, kind: str = "postgres", timeout: float = 120.0) -> dict[str, float]:
        """SIGKILL the primary (``postgres``: its postmaster; ``node``: Patroni too).

        Returns ``promoted`` (seconds until the other node answers as primary) and
        ``healthy`` (until the killed node streams again as the sync standby).
        """
        victim = self.primary()
        if victim is None:
            raise RuntimeError("no primary to kill")
        began = time.monotonic()
        if kind == "node":
            victim.kill()
        elif kind == "postgres":
            victim.kill_postgres()
        else:
            raise ValueError(kind)
        process.wait_until(
            lambda: any(n.is_primary() for n in self.nodes if n is not victim),
            timeout,
            "Patroni promoted no replica",
        )
        promoted = time.monotonic() - began
        if kind == "node":
            victim.start()  # a supervisor brings the host's Patroni back: it rejoins
        process.wait_until(self.healthy, timeout, "the old primary never came back as standby")
        return {"promoted": round(promoted, 1), "healthy": round(time.monotonic() - began, 1)}

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        process.stop(self.etcd, 20)
        self.etcd = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
