"""A TCP proxy the test controls: put it between clients and a broker, then
cut and restore the connections on demand.

``cut()`` closes every proxied connection (both sides see the socket die,
the way a broker restart or a network failure looks to a client) and stops
listening, so reconnection attempts are refused until ``restore()``.  The
proxy keeps its port across cuts, so the clients' URLs stay valid.

It is a thread per direction per connection: tests open a handful of
connections, and plain blocking sockets keep the proxy obviously correct.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy", "proxied_url"]


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.upstream):
            try:
                # RST rather than FIN: what a dead peer or a failed route looks like.
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            except OSError:
                pass
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


@dataclass
class TcpProxy:
    """Listens on ``127.0.0.1:<port>`` and forwards to ``target``."""

    target_host: str
    target_port: int
    port: int = 0
    accepted: int = 0
    cuts: int = 0
    _listener: socket.socket | None = None
    _pairs: list[_Pair] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _closing: bool = False

    # -- lifecycle --------------------------------------------------------

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def close(self) -> None:
        self._closing = True
        self._stop_listening()
        self._drop_all()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control ----------------------------------------------------------

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def cut(self) -> None:
        """Kill every proxied connection and refuse new ones."""
        self.cuts += 1
        self._stop_listening()
        self._drop_all()

    def restore(self) -> None:
        """Accept connections again (same port)."""
        if self._listener is None:
            self._listen()

    def connections(self) -> int:
        with self._lock:
            self._pairs = [p for p in self._pairs if not p.closed]
            return len(self._pairs)

    def wait_connections(self, n: int, timeout: float = 30.0) -> bool:
        """Until at least ``n`` proxied connections are open (clients reconnected)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connections() >= n:
                return True
            time.sleep(0.02)
        return False

    # -- internals --------------------------------------------------------

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._thread = threading.Thread(
            target=self._accept_loop, args=(sock,), name=f"tcpproxy-{self.port}", daemon=True
        )
        self._thread.start()

    def _stop_listening(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2)

    def _drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                client.close()
                return
            try:
                upstream = socket.create_connection((self.target_host, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(pair, src, dst), name="tcpproxy-pump", daemon=True
                ).start()

    @staticmethod
    def _pump(pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not pair.closed:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            pair.close()


def proxied_url(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's (credentials kept)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    creds = ""
    if "@" in netloc:
        creds, netloc = netloc.rsplit("@", 1)
        creds += "@"
    return urlunsplit(
        (parts.scheme, f"{creds}127.0.0.1:{proxy.port}", parts.path, parts.query, parts.fragment)
    )


def target_of(url: str) -> tuple[str, int]:
    """Host and port a broker URL points at."""
    parts = urlsplit(url)
    default = 5672 if parts.scheme.startswith("amqp") else 6379
    return parts.hostname or "127.0.0.1", parts.port or default
