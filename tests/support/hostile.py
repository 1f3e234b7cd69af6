"""Payloads that run code when deserialized, and a raw publisher to send them.

Shared by the security tests of wkctl's processes and of hardened Celery
workers: a consumer that deserializes one of them creates a file.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu import Connection, Exchange, Producer


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the file appearing = code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def hostile_payloads(folder: Path) -> dict[str, tuple[bytes, str | None]]:
    pickled = pickle.dumps(_CreatesFile(str(folder / "pickle-ran")), protocol=2)
    yaml_doc = f"!!python/object/apply:builtins.open [{str(folder / 'yaml-ran')!r}, 'w']\n"
    return {
        "pickle": (pickled, "application/x-python-serialize"),
        "pickle-no-type": (pickled, None),
        "pickle-as-json": (pickled, "application/json"),
        "yaml": (yaml_doc.encode(), "application/x-yaml"),
        "msgpack": (b"\x82\xa4type\xb0worker-heartbeat\xa5clock\x01", "application/x-msgpack"),
    }


def publish_raw(
    conn: Connection,
    exchange: Exchange,
    routing_key: str,
    body: bytes,
    content_type: str | None,
    headers: dict[str, Any],
) -> None:
    producer = Producer(conn.channel(), exchange=exchange, auto_declare=True)
    producer.publish(
        body,
        routing_key=routing_key,
        content_type=content_type or "",
        content_encoding="utf-8" if content_type == "application/json" else "binary",
        headers=headers,
        serializer=None,
    )


@dataclass(frozen=True)
class Hostile:
    """One hostile message for a worker: where it goes and what it carries."""

    target: str  # "pidbox" (the control exchange) or "event" (the event exchange)
    routing_key: str
    body: bytes
    content_type: str | None
    headers: dict[str, Any]
    content_encoding: str | None = None


def heartbeat(hostname: Any, clock: Any = 3) -> dict[str, Any]:
    """A heartbeat valid in every field but, perhaps, its hostname or clock."""
    return {
        "type": "worker-heartbeat",
        "hostname": hostname,
        "clock": clock,
        "timestamp": time.time(),
        "utcoffset": 0,
        "freq": 2.0,
        "pid": 77,
        "active": 0,
        "processed": 0,
        "loadavg": [0.0, 0.0, 0.0],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
    }


def broker_safe(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers the brokers accept (RabbitMQ closes the connection on NaN
    or out-of-range numbers in a table)."""
    return {
        k: v
        for k, v in headers.items()
        if (isinstance(v, str) and len(v) < 2000)
        or (isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63)
    }


def _json(obj: Any) -> bytes:
    text = json.dumps(obj, allow_nan=True, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate can travel only escaped
        return json.dumps(obj, allow_nan=True).encode()


def _event(obj: Any, sender: str = "hostile@x") -> Hostile:
    kind = str(obj.get("type", "worker-heartbeat")) if isinstance(obj, dict) else "x"
    return Hostile("event", kind.replace("-", "."), _json(obj), JSON, {"hostname": sender})


def _request(method: str, arguments: Any, **headers: Any) -> Hostile:
    body = {
        "method": method,
        "arguments": arguments,
        "destination": None,
        "pattern": None,
        "matcher": None,
        "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "nobody-reads-this"},
        "ticket": "hostile-ticket",
    }
    return Hostile("pidbox", "", _json(body), JSON, {"clock": 1, **headers})


JSON = "application/json"


def hostile_groups(folder: Path, cases: int, seed: int = 3) -> dict[str, list[Hostile]]:
    """Every hostile message of the security suite, grouped as a worker meets
    them: non-JSON content types, hostile names, deep nesting and oversized
    bodies, bad clocks, forged elections, and ``cases`` mutated captured
    messages (``support.mutate``) on the control and event exchanges."""
    from .mutate import HOSTILE_NAMES, Mutator, deep_nesting

    groups: dict[str, list[Hostile]] = {}
    groups["content types"] = [
        Hostile(target, rk, body, ctype, {"hostname": f"evil-{label}@x", "clock": 1})
        for label, (body, ctype) in hostile_payloads(folder).items()
        for target, rk in (("event", "worker.heartbeat"), ("pidbox", ""))
    ]
    groups["hostile names"] = [
        *(_event(heartbeat(name)) for name in HOSTILE_NAMES),
        *(
            _event(
                {
                    "type": "worker-elect",
                    "id": "x",
                    "topic": "task",
                    "action": None,
                    "hostname": name,
                    "pid": 1,
                    "clock": 5,
                }
            )
            for name in HOSTILE_NAMES
        ),
        *(
            _request("ping", {}, hostname=name[:200])
            for name in HOSTILE_NAMES
            if "\ud800" not in name
        ),
    ]
    huge = b'{"pad": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    groups["nesting and size"] = [
        Hostile(target, rk, body, JSON, {"hostname": "deep@x", "clock": 1})
        for body in (deep_nesting(33).encode(), deep_nesting(100_000).encode(), huge)
        for target, rk in (("event", "worker.heartbeat"), ("pidbox", ""))
    ]
    groups["bad clocks"] = [
        *(
            _event(heartbeat("forger@evil", clock), "forger@evil")
            for clock in (2**62, 2**63 - 1, 2**70, -5, "9" * 30, 1e300, float("nan"), None)
        ),
        _request("ping", {}, clock=2**62),
        _request("ping", {}, clock="x"),
    ]
    elect = {
        "type": "worker-elect",
        "id": "forged",
        "topic": "task",
        "hostname": "f@x",
        "pid": 1,
        "clock": 3,
        "action": {"task": "tasks.add", "args": [1, 2]},
    }
    groups["forged elections"] = [
        *(
            _event({**elect, **change}, "f@x")
            for change in (
                {"id": None},
                {"id": ["a"]},
                {"clock": 2**70},
                {"clock": "1"},
                {"topic": 5},
                {"topic": "nosuch"},
                {"action": "x" * 10_000},
                {"pid": "p"},
                {"hostname": None},
            )
        ),
        *(
            _event(
                {
                    "type": "worker-elect-ack",
                    "id": ident,
                    "hostname": "f@x",
                    "pid": 1,
                    "clock": clock,
                },
                "f@x",
            )
            for ident, clock in (("never-started", 3), ("forged", "x"), (None, 2**70))
        ),
        *(
            _request("election", arguments)
            for arguments in (
                {},
                {"id": None, "topic": 5, "action": "x"},
                {"id": ["x"], "topic": "task"},
                {"id": "forged-2", "topic": "nosuch", "action": None},
            )
        ),
    ]
    mutated: list[Hostile] = []
    big = 0
    for msg in Mutator(seed).messages(cases):
        if len(msg.body) > 1_000_000:
            big += 1
            if big > 3:  # a few multi-megabyte bodies are enough
                continue
        headers = broker_safe(msg.headers)
        if msg.kind.startswith("pidbox-reply"):
            continue  # a reply reaches only the client that asked
        target = "pidbox" if msg.kind.startswith("pidbox") else "event"
        rk = "" if target == "pidbox" else (msg.routing_key or "worker.heartbeat")
        mutated.append(
            Hostile(target, rk, msg.body, msg.content_type, headers, msg.content_encoding)
        )
    groups[f"{len(mutated)} mutated messages"] = mutated
    return groups


def send_hostile(url: str, messages: list[Hostile]) -> None:
    """Publish ``messages`` raw on the default control and event exchanges."""
    from .capture import exchanges

    with Connection(url) as conn:
        pidbox, _, events = exchanges(conn.transport.driver_type)
        producer = Producer(conn.channel())
        for msg in messages:
            exchange = pidbox if msg.target == "pidbox" else events
            producer.publish(
                msg.body,
                exchange=exchange,
                routing_key=msg.routing_key,
                content_type=msg.content_type or "",
                content_encoding=msg.content_encoding
                or ("utf-8" if msg.content_type == JSON else "binary"),
                headers=msg.headers,
                serializer=None,
                declare=[exchange],
            )
