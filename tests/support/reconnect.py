"""What the reconnection tests share: a TCP proxy whose open connections a test
cuts while it keeps accepting new ones (``tcpproxy.TcpProxy`` also refuses new
ones until restored), and a heartbeat any broker user could send."""

from __future__ import annotations

import socket
import threading

from wkctl.protocol.broker import BrokerSettings


class Proxy:
    """A TCP proxy to the broker whose connections the test can cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.accepting = threading.Event()
        self.accepting.set()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.accepting.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.socks.clear()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.server.close()


def publish_heartbeat(settings: BrokerSettings, hostname: str) -> None:
    """One valid heartbeat on the event exchange, as any broker user could send."""
    from kombu import Producer

    from wkctl.protocol.broker import event_exchange
    from wkctl.protocol.host import local_event as event

    exchange = event_exchange(settings.names, settings.transport)
    with settings.connection() as conn:
        Producer(conn.channel()).publish(
            event("worker-heartbeat", hostname=hostname, clock=1, freq=2.0),
            exchange=exchange,
            declare=[exchange],  # kombu's redis transport routes by the declared type
            routing_key="worker.heartbeat",
            serializer="json",
        )
