"""A private virtual host on the machine's RabbitMQ (127.0.0.1:5672, guest/guest).

RabbitMQ is never restarted or stopped here (other people use it): a run gets a vhost
of its own, made and deleted with ``rabbitmqctl``, so its queues, exchanges and quorum
queues go away with it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass, field

HOST, PORT = "127.0.0.1", 5672


def rabbitmq_up() -> bool:
    """Whether RabbitMQ answers on 5672 and ``rabbitmqctl`` can make a vhost here."""
    if shutil.which("rabbitmqctl") is None:
        return False
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            return True
    except OSError:
        return False


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@dataclass
class RabbitVhost:
    name: str = field(default_factory=lambda: f"changewatch-test-{uuid.uuid4().hex[:8]}")

    def start(self) -> RabbitVhost:
        _ctl("add_vhost", self.name)
        _ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{PORT}/{self.name}"

    def stop(self) -> None:
        _ctl("delete_vhost", self.name)
