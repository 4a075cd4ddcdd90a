"""S3 out of reach: a TCP relay in front of moto's server, to take down and bring back.

Stopping the relay makes the service behind it refuse connections (and resets open ones)
while its data stays intact; hanging moto itself is ``workers.paused``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

from bench.harness.process import free_port


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
        # What crossed it (bench.tiers): HTTP requests sent, bytes each way.
        self.requests = 0
        self.bytes_up = 0
        self.bytes_down = 0

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
                self._count(src is pair.a, data)
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

    def _count(self, up: bool, data: bytes) -> None:
        with self._lock:
            if up:
                self.bytes_up += len(data)
                self.requests += data.count(b" HTTP/1.1\r\n")
            else:
                self.bytes_down += len(data)


class _Pair:
    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.a, self.b = a, b
        self._left = 2
        self._lock = threading.Lock()

    def one_done(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left == 0
