"""Load generator: Celery-format events on the event exchange at a fixed rate.

``python -m bench.loadgen --broker URL --rate EVENTS_PER_S --duration S
--tag TAG`` publishes what a busy Celery cluster sends: ``worker-heartbeat``
events one per message, and task events (received, started, succeeded) in
``task.multi`` JSON lists of up to ``--batch`` events, the way workers buffer
them; headers and routing keys as Celery sets them.  Every event's
``timestamp`` is its send time (the consumers' lag is measured against it)
and its hostname is ``load<k>-<TAG>@bench`` so that the consumers can tell
the load from anything else on the broker.

Pacing: every 5 ms the generator publishes as many events as the schedule
owes.  It prints one JSON line at the end: events and messages published,
the achieved rate, and when it started and stopped (wall clock).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu import Connection, Producer

from wkctl.protocol.broker import event_exchange, transport_of
from wkctl.protocol.wire import Names


def _utcoffset() -> int:
    # celery.utils.time.utcoffset(): what Celery workers put in events
    return (time.altzone if time.daylight else time.timezone) // 3600


def _no_flush() -> None:
    pass


def _redis_publisher(channel: Any, exchange: str) -> tuple[Callable[..., None], Callable[[], None]]:
    """Publish on Redis exactly what kombu publishes, pipelined.

    kombu's Redis transport builds a new redis-py client object per publish
    (about 0.5 ms each with redis-py 8), which caps one publishing process
    near 1,500 messages/s -- far below the rates under test.  This builds
    the very same envelope with the channel's own methods
    (``prepare_message``, ``_inplace_augment_message``, the fanout topics)
    and sends the ``PUBLISH`` commands through one pipeline per pacing tick.
    """
    from kombu.utils.json import dumps

    client = channel.client  # one redis-py client for the whole run
    pipe = client.pipeline(transaction=False)

    def publish(
        body: str,
        routing_key: str,
        content_type: str,
        content_encoding: str,
        headers: dict[str, Any],
        retry: bool = False,
    ) -> None:
        message = channel.prepare_message(
            body, None, content_type, content_encoding, headers, {"delivery_mode": 2}
        )
        channel._inplace_augment_message(message, exchange, routing_key)
        payload = dumps(message)
        for topic in channel._get_publish_topics(exchange, routing_key):
            pipe.publish(topic, payload)

    def flush() -> None:
        pipe.execute()

    return publish, flush


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.loadgen")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--tag", default="x")
    parser.add_argument("--workers", type=int, default=20)
    args = parser.parse_args(argv)

    names = Names()
    conn = Connection(args.broker)
    conn.ensure_connection(max_retries=3)
    exchange = event_exchange(names, transport_of(args.broker))
    producer = Producer(conn.channel(), exchange=exchange, auto_declare=False)
    exchange(producer.channel).declare()
    flush = _no_flush
    if transport_of(args.broker) in ("redis", "rediss"):
        publish_fast, flush = _redis_publisher(producer.channel, exchange.name)
    hosts = [f"load{k}-{args.tag}@bench" for k in range(args.workers)]
    offset = _utcoffset()
    clock = 1000
    seq = 0
    events = messages = 0
    publish = producer.publish
    if flush is not _no_flush:
        publish = publish_fast
    tail = '"utcoffset":%d,"pid":4242,"clock":%d,"timestamp":%.6f}'  # noqa: UP031 (fast)

    def task_event(host: str, type_: str, task_id: str, now: float) -> str:
        nonlocal clock
        clock += 1
        extra = ""
        if type_ == "task-received":
            extra = (
                f'"name":"proj.tasks.add","args":"(2, 3)","kwargs":"{{}}","root_id":"{task_id}",'
                '"parent_id":null,"retries":0,"eta":null,"expires":null,'
            )
        elif type_ == "task-succeeded":
            extra = '"result":"5","runtime":0.0012,'
        return f'{{"hostname":"{host}","type":"{type_}","uuid":"{task_id}",{extra}' + tail % (
            offset,
            clock,
            now,
        )

    start = time.time()
    end = start + args.duration
    beat_every = max(1, int(args.rate // 200))  # ~200 heartbeats/s at most
    while True:
        now = time.time()
        if now >= end:
            break
        owed = int((now - start) * args.rate) - events
        while owed > 0:
            host = hosts[seq % len(hosts)]
            seq += 1
            if seq % beat_every == 0:
                clock += 1
                body = (
                    f'{{"hostname":"{host}","type":"worker-heartbeat","freq":2.0,"active":1,'
                    f'"processed":{seq},"loadavg":[0.5,0.4,0.3],"sw_ident":"py-celery",'
                    '"sw_ver":"5.7.0","sw_sys":"Linux",'
                ) + tail % (offset, clock, now)
                publish(
                    body,
                    routing_key="worker.heartbeat",
                    content_type="application/json",
                    content_encoding="utf-8",
                    headers={"hostname": host},
                    retry=False,
                )
                events += 1
                messages += 1
                owed -= 1
                continue
            n = min(owed, args.batch)
            parts = []
            task_id = str(uuid.uuid4())
            kinds = ("task-received", "task-started", "task-succeeded")
            for i in range(n):
                if i % 3 == 0 and i:
                    task_id = str(uuid.uuid4())
                parts.append(task_event(host, kinds[i % 3], task_id, now))
            body = parts[0] if n == 1 else "[" + ",".join(parts) + "]"
            publish(
                body,
                routing_key="task.multi"
                if n > 1
                else parts[0].split('"type":"')[1].split('"')[0].replace("-", "."),
                content_type="application/json",
                content_encoding="utf-8",
                headers={"hostname": host},
                retry=False,
            )
            events += n
            messages += 1
            owed -= n
        flush()
        time.sleep(0.005)
    stop = time.time()
    conn.release()
    print(
        json.dumps(
            {
                "events": events,
                "messages": messages,
                "seconds": stop - start,
                "rate": events / (stop - start),
                "start": start,
                "stop": stop,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
