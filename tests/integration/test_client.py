"""The client's kombu layer for real: against wkctl nodes on the embedded broker
and against RabbitMQ through a TCP proxy the test cuts (reconnection). Its
sans-IO rules are in ``tests/unit/test_client_core.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from support.reconnect import Proxy, publish_heartbeat
from wkctl.protocol.broker import BrokerSettings, embedded_settings
from wkctl.protocol.client import (
    Client,
    EventStream,
    StreamNotice,
    hello_table,
)
from wkctl.protocol.wire import Names

# -- revoked ids, both wire forms --------------------------------------------


# -- reply collection ----------------------------------------------------------


# -- events --------------------------------------------------------------------


# -- elections, observed ---------------------------------------------------


# -- against wkctl nodes on the embedded broker ----------------------------


@pytest.fixture
def embedded_nodes(tmp_path: Path):
    from wkctl.protocol.binding import Binding

    settings = embedded_settings(tmp_path / "broker")
    binding = Binding(settings)
    handles = [binding.add_node(f"n{i}@client-test", heartbeat=1.0) for i in range(3)]
    binding.start()
    for h in handles:
        assert h.wait_synced(15), h.log_text()
    yield settings, handles
    binding.shutdown()


def test_client_against_embedded_nodes(embedded_nodes) -> None:
    settings, handles = embedded_nodes
    names = sorted(h.name for h in handles)
    with settings.connection() as conn, Client(conn, settings.names) as client:
        result = client.hello(revoked=["rid-1"], timeout=5.0, expect=3)
        assert sorted(result.replies) == names
        assert result.waited < 5.0 and result.elapsed is not None
        table = hello_table(result.replies)
        assert all("rid-1" in info["revoked"] for info in table.values())
        clocks = client.clock_values(timeout=5.0, expect=3)
        assert sorted(clocks.replies) == names
        assert client.clock.value > max(v["clock"] for v in clocks.replies.values())


def test_event_stream_sees_requested_heartbeats(embedded_nodes) -> None:
    settings, handles = embedded_nodes
    stream = EventStream(settings).open()
    try:
        assert stream.connection is not None
        with Client(stream.connection, settings.names) as client:
            client.heartbeat()
        seen: set[str] = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(seen) < 3:
            for ev in stream.poll(0.2):
                if ev.get("type") == "worker-heartbeat":
                    seen.add(ev["hostname"])
        assert seen == {h.name for h in handles}
    finally:
        stream.close()


# -- reconnection, through a proxy the test cuts ---------------------------


@pytest.mark.broker
def test_event_stream_reconnects_after_the_connection_is_cut(broker_url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(broker_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5672))
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    url = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    notices: list[StreamNotice] = []
    settings = BrokerSettings(url=url, names=Names(), connect_timeout=2.0)
    stream = EventStream(settings, on_notice=notices.append, backoff_start=0.1).open()
    direct = BrokerSettings(url=broker_url)
    try:
        proxy.accepting.clear()
        proxy.cut()
        down_at = time.monotonic()
        stream.poll(0.3, deadline=time.monotonic() + 0.6)  # finds the cut, cannot reconnect yet
        assert notices and notices[0].kind == "lost"
        proxy.accepting.set()
        got: list[Any] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not got:
            if any(n.kind == "reconnected" for n in notices):
                publish_heartbeat(direct, "probe@test")
            got = [e for e in stream.poll(0.3, deadline) if e.get("hostname") == "probe@test"]
        assert got, f"no event after reconnecting: {notices}"
        kinds = [n.kind for n in notices]
        assert kinds[0] == "lost" and "reconnected" in kinds
        assert stream.reconnects >= 1
        assert time.monotonic() - down_at < 15
        assert "guest:guest" not in " ".join(n.message for n in notices)
    finally:
        stream.close()
        proxy.close()
