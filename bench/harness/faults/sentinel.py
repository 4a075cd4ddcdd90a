"""A private Redis Sentinel deployment: a primary, one replica and three sentinels.

All on free loopback ports in a temporary folder, from Debian's ``redis-server`` and
``redis-sentinel`` (``scripts/setup.sh`` installs both; without ``redis-sentinel``,
``redis-server --sentinel`` is the same program). The sentinels agree on a failure
with a quorum of two and ``down-after-milliseconds`` 1500, so a SIGKILLed primary is
replaced by its replica within a few seconds. ``kill_primary`` is the fault; the killed
server is started again as a replica of the new primary, as an operator's supervisor
would, so a second kill can promote it back.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.harness import process
from bench.harness.faults.redis_server import RedisServer
from bench.harness.process import free_port

MASTER_NAME = "changewatch"
DOWN_AFTER_MS = 1500


def sentinel_binary() -> list[str] | None:
    """``redis-sentinel``, or ``redis-server --sentinel``; None when neither is here."""
    if shutil.which("redis-sentinel"):
        return ["redis-sentinel"]
    if shutil.which("redis-server"):
        return ["redis-server"]  # with --sentinel after the config file
    return None


@dataclass
class SentinelCluster:
    dir: Path
    servers: list[RedisServer] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> SentinelCluster:
        primary = RedisServer(self.dir / "r0").start()
        replica = RedisServer(
            self.dir / "r1", extra=("--replicaof", "127.0.0.1", str(primary.port))
        ).start()
        self.servers = [primary, replica]
        for i in range(3):
            self._start_sentinel(i, primary.port)
        process.wait_until(self._ready, 30, "sentinels never agreed on the primary")
        return self

    def _start_sentinel(self, i: int, primary_port: int) -> None:
        port = free_port()
        folder = self.dir / f"s{i}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nprotected-mode no\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        argv = [*(sentinel_binary() or ["redis-sentinel"]), str(conf)]
        if argv[0] == "redis-server":
            argv.append("--sentinel")
        self.sentinels.append(process.start(argv, log=folder / "sentinel.log"))
        self.sentinel_ports.append(port)

    def _ready(self) -> bool:
        try:
            replicas = self.client().info("replication").get("connected_slaves", 0)
            seen = [self._sentinel(p).sentinel_master(MASTER_NAME) for p in self.sentinel_ports]
            return replicas >= 1 and all(int(m.get("num-other-sentinels", 0)) >= 2 for m in seen)
        except redis.RedisError:
            return False

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)

    def url(self, db: int = 0) -> str:
        """The ``sentinel://`` URL changewatch is given (every sentinel, ``;``-separated)."""
        return ";".join(f"sentinel://127.0.0.1:{p}/{db}" for p in self.sentinel_ports)

    def primary_port(self) -> int:
        for port in self.sentinel_ports:
            try:
                _, found = self._sentinel(port).sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(found)
            except (redis.RedisError, TypeError):
                continue
        raise RuntimeError("no sentinel names a primary")

    def primary(self) -> RedisServer:
        port = self.primary_port()
        return next(s for s in self.servers if s.port == port)

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.primary_port(), db=db, socket_timeout=5)

    def kill_primary(self) -> float:
        """SIGKILL the primary; seconds until a sentinel names the replica instead. The
        killed server then starts again as a replica of the new primary."""
        victim = self.primary()
        began = time.monotonic()
        victim.stop(hard=True)
        process.wait_until(
            lambda: self.primary_port() != victim.port, 60, "no sentinel promoted the replica"
        )
        promoted = time.monotonic() - began
        victim.extra = ("--replicaof", "127.0.0.1", str(self.primary_port()))
        victim.start()
        return promoted

    def stop(self) -> None:
        for proc in self.sentinels:
            process.stop(proc, 10)
        for server in self.servers:
            server.stop()
