"""Payloads that run code when deserialized, and a raw publisher to send them.

Shared by the security tests of wkctl's processes and of hardened Celery
workers: a consumer that deserializes one of them creates a file.
"""

from __future__ import annotations

import pickle
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
