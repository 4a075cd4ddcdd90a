"""A throwaway PostgreSQL cluster, to stop (cleanly or as a crash) and start again."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.process import free_port, wait_for_port


def postgres_bindir() -> Path | None:
    """The newest Debian PostgreSQL server binaries (``initdb``, ``pg_ctl``), if installed."""
    found = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


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
    # More server options, after the defaults (a later -c wins), e.g. full_page_writes=on.
    options: str = ""

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
            " -c fsync=off -c full_page_writes=off " + self.options
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
