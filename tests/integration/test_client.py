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


# -- express events overtake a flood -----------------------------------------


def _publish_flood(settings: BrokerSettings, acks: int, election_id: str) -> None:
    """``acks`` worker-elect-acks, then one worker-elect, in that order."""
    from kombu import Producer

    from wkctl.protocol.broker import event_exchange
    from wkctl.protocol.host import local_event as event

    exchange = event_exchange(settings.names, settings.transport)
    with settings.connection() as conn:
        producer = Producer(conn.channel())
        exchange(producer.channel).declare()
        for i in range(acks):
            producer.publish(
                event("worker-elect-ack", hostname=f"n{i % 50}@flood", clock=i + 1, id=election_id),
                exchange=exchange,
                routing_key="worker.elect.ack",
                serializer="json",
            )
        producer.publish(
            event(
                "worker-elect",
                hostname="late@flood",
                clock=acks + 1,
                pid=7,
                id=election_id,
                topic="task",
                action=None,
                cver=1,
            ),
            exchange=exchange,
            routing_key="worker.elect",
            serializer="json",
        )


@pytest.fixture
def own_url(request: pytest.FixtureRequest, broker_pool: Any) -> Any:
    """A namespace of this test's own on the broker ``request.param`` names."""
    from support.requires import isolated_url

    url = isolated_url(broker_pool, request.param)
    yield url
    broker_pool.release(url)


@pytest.mark.broker
@pytest.mark.parametrize("own_url", ["amqp"], indirect=True)
def test_express_event_overtakes_a_flood(own_url: str) -> None:
    """The request published after 3,000 acks reaches the caller before the
    acks ahead of it were consumed (the main queue's window keeps them in
    the broker), and the main queue still delivers everything in order."""
    settings = BrokerSettings(url=own_url)
    acks = 3000
    stream = EventStream(settings, routing_key="worker.#", express="worker.elect").open()
    try:
        assert stream.express == "worker.elect"
        _publish_flood(settings, acks, "flood-1")
        express: list[Any] = []
        main: list[Any] = []
        consumed_before_express: int | None = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(main) < acks + 1:
            got = stream.poll(0.5, deadline)
            express += stream.take_express()
            if express and consumed_before_express is None:
                consumed_before_express = len(main)
            main += got
        assert [e["hostname"] for e in express] == ["late@flood"]
        assert consumed_before_express is not None
        assert consumed_before_express < acks, consumed_before_express
        # at most a window (plus the batch in hand) ahead of it
        assert consumed_before_express <= stream.window + stream.max_batch
        assert len(main) == acks + 1
        assert [e["clock"] for e in main] == list(range(1, acks + 2))
        assert main[-1]["type"] == "worker-elect"
    finally:
        stream.close()


@pytest.mark.broker
@pytest.mark.parametrize("own_url", ["redis"], indirect=True)
def test_express_is_ignored_where_one_subscription_carries_everything(
    own_url: str, tmp_path: Path
) -> None:
    """On Redis (fanout events) and the embedded broker there is no second
    queue: every event comes in the one order, the express one included."""
    assert EventStream(embedded_settings(tmp_path), express="worker.elect").express is None
    settings = BrokerSettings(url=own_url)
    stream = EventStream(settings, routing_key="worker.#", express="worker.elect")
    assert stream.express is None and not stream.windowed
    stream.open()
    try:
        _publish_flood(settings, 100, "flood-2")
        main: list[Any] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(main) < 101:
            main += stream.poll(0.5, deadline)
            assert stream.take_express() == []
        assert [e["clock"] for e in main] == list(range(1, 102))
    finally:
        stream.close()
