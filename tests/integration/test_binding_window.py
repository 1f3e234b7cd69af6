"""A node answers control requests during an event flood (RabbitMQ).

The binding consumes events through a window of unacknowledged messages,
so a flood (an election of 50 nodes is 2,550 events) waits in the broker and
a ``ping`` on the node's own pidbox queue overtakes it; on one unwindowed
stream it would be answered only once every event ahead of it was handled.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from wkctl.protocol.binding import Binding
from wkctl.protocol.broker import BrokerSettings, event_exchange
from wkctl.protocol.client import Client
from wkctl.protocol.host import local_event as event

FLOOD = 5000


@pytest.fixture
def amqp_own(broker_pool: Any) -> Any:
    from support.requires import isolated_url

    url = isolated_url(broker_pool, "amqp")
    yield url
    broker_pool.release(url)


@pytest.mark.broker
def test_ping_overtakes_an_event_flood(amqp_own: str) -> None:
    from kombu import Producer

    settings = BrokerSettings(url=amqp_own)
    binding = Binding(settings)
    handle = binding.add_node("win@window-test", heartbeat=30.0)
    binding.start()
    try:
        assert handle.wait_synced(15), handle.log_text()
        exchange = event_exchange(settings.names, settings.transport)
        with settings.connection() as conn:
            producer = Producer(conn.channel())
            for i in range(FLOOD):
                producer.publish(
                    event("worker-elect-ack", hostname=f"n{i % 50}@flood", clock=i + 1, id="nope"),
                    exchange=exchange,
                    routing_key="worker.elect.ack",
                    serializer="json",
                )
            # The last event of the flood: a heartbeat of a new node, which
            # the node notes (alive_peers) once it has worked through the rest.
            producer.publish(
                event(
                    "worker-heartbeat",
                    hostname="last@flood",
                    clock=FLOOD + 1,
                    freq=2.0,
                    sw_ident="window-test",
                    sw_ver="1.0",
                    sw_sys="Linux",
                ),
                exchange=exchange,
                routing_key="worker.heartbeat",
                headers={"hostname": "last@flood"},
                serializer="json",
            )
        seen_last: list[float] = []

        def watch() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if "last@flood" in handle.alive_peers():
                    seen_last.append(time.monotonic())
                    return
                time.sleep(0.002)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with settings.connection() as conn:
            client = Client(conn, settings.names)
            replies = client.call("ping", {}, timeout=30, destination=[handle.name])
            answered = time.monotonic()
            client.close()
        watcher.join(60)
        assert handle.name in replies.replies, replies
        assert seen_last, "the flood was never worked through"
        # the ping was answered before the node had handled the flood
        assert answered < seen_last[0], (answered, seen_last[0])
        assert binding.internal_errors == 0
        # idle: the window's remainder is acknowledged, none left pending
        deadline = time.monotonic() + 5
        while binding._event_acks.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert binding._event_acks.pending == 0 and binding._event_acks.tag is None
    finally:
        binding.shutdown()
