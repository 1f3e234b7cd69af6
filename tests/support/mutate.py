"""A mutation fuzzer seeded with real captured protocol messages.

Hypothesis explores shapes it is told about; real hostile input looks like
*almost valid* traffic: a captured ``hello`` reply with one field of the
wrong type, a heartbeat whose clock is ``2**70``, a ``worker-elect`` whose
hostname is a right-to-left override, a body cut in the middle of a UTF-8
sequence, a pickle with a JSON routing key.  This module takes the messages
captured from real Celery workers (``tests/data/*.ndjson``) and derives such
messages from them, deterministically from a seed, so that a failing case
can be replayed from its number.

Two levels of mutation:

* structural: the decoded body is changed (a leaf replaced by a hostile
  value, a key removed or added, a container replaced, a list blown up,
  nesting added) and re-encoded as JSON;
* raw: the encoded bytes or the envelope are changed (truncated, bytes
  flipped, invalid UTF-8, another content type or encoding, a huge body,
  non-JSON serializations).

Nothing here deserializes anything; it only produces bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "HOSTILE_NAMES",
    "HOSTILE_VALUES",
    "Mutator",
    "RawMessage",
    "Sample",
    "deep_nesting",
    "load_samples",
]

#: Largest body the mutator produces (a bit over the default 8 MiB limit):
#: nested blow-ups could otherwise build gigabytes in the fuzzer itself.
MAX_GENERATED = 16 * 1024 * 1024

DATA = Path(__file__).resolve().parent.parent / "data"

#: Node names that have broken log lines, terminals and dict keys elsewhere.
HOSTILE_NAMES: tuple[str, ...] = (
    "",
    " ",
    "w1@host\nINFO forged log line",
    "w1@host\r\x1b[2J\x1b[31mred",
    "\u202eevil@host",  # right-to-left override
    "w\u200b1@host",  # zero-width space
    "\ud800@host",  # lone surrogate (escaped in JSON)
    "w1@h\x00st",
    "\U0001f4a9@\U0001f525",
    "ｗ１＠ｈｏｓｔ",  # fullwidth look-alike
    "w1@host" + "\u0301" * 200,  # combining marks
    "a" * 100_000,
    "%s%s%n@host",
    "{hostname}@{0}",
    "../../etc/passwd",
    "*",
    "w1@host.celery.pidbox",
)

#: Values that are the wrong type, out of range, or merely surprising.
HOSTILE_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**53,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    2**200,
    -(2**63),
    1e308,
    -1e308,
    1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "now",
    "1",
    "x" * 10_000,
    [],
    [None],
    [1, 2, 3],
    {},
    {"": None},
    {"__proto__": {"polluted": True}},
    {"$ref": "#"},
    ["a"] * 1000,
    list(range(1000)),
    *HOSTILE_NAMES[:10],
)


@dataclass(frozen=True)
class Sample:
    """One captured message (decoded body plus envelope)."""

    kind: str
    body: Any
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    routing_key: str = ""
    exchange: str = ""


@dataclass(frozen=True)
class RawMessage:
    """A message as it would travel: bytes and envelope, plus how it was made."""

    body: bytes
    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any]
    routing_key: str
    kind: str
    how: str

    def as_inbound(self) -> Any:
        from wkctl.protocol.node import Inbound

        return Inbound(
            self.body, self.content_type, self.content_encoding, self.headers, self.routing_key
        )


def load_samples(paths: list[Path] | None = None) -> list[Sample]:
    """Every captured record of ``tests/data/*.ndjson`` that has a body."""
    out: list[Sample] = []
    for path in paths or sorted(DATA.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or "body" not in rec:
                # plain event streams: one event body per line
                if isinstance(rec, dict) and "type" in rec:
                    out.append(
                        Sample(
                            f"event:{rec['type']}",
                            rec,
                            {"hostname": rec.get("hostname")},
                            routing_key=str(rec["type"]).replace("-", "."),
                        )
                    )
                continue
            out.append(
                Sample(
                    str(rec.get("kind", "?")),
                    rec["body"],
                    dict(rec.get("headers") or {}),
                    str(rec.get("content_type") or "application/json"),
                    str(rec.get("routing_key") or ""),
                    str(rec.get("exchange") or ""),
                )
            )
    return out


def deep_nesting(depth: int, leaf: Any = 1) -> str:
    """JSON text nested ``depth`` levels deep, built as text (no recursion)."""
    return "[" * depth + json.dumps(leaf) + "]" * depth


def _dumps(obj: Any) -> bytes:
    # allow_nan: Python's json (and so kombu's) emits NaN/Infinity, so a
    # hostile Python peer can put them on the wire.
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


def _paths(obj: Any, prefix: tuple[Any, ...] = (), limit: int = 400) -> list[tuple[Any, ...]]:
    """Paths to every node of a JSON document (bounded, breadth first)."""
    found: list[tuple[Any, ...]] = [prefix]
    queue: list[tuple[tuple[Any, ...], Any]] = [(prefix, obj)]
    while queue and len(found) < limit:
        path, node = queue.pop(0)
        if isinstance(node, dict):
            items: list[tuple[Any, Any]] = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))[:50]
        else:
            continue
        for key, value in items:
            found.append(path + (key,))
            queue.append((path + (key,), value))
    return found


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = _get(obj, path[:-1])
    parent[path[-1]] = value
    return obj


def _copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj, allow_nan=True))


class Mutator:
    """Deterministic mutations of captured samples.

    ``Mutator(seed).messages(n)`` yields ``n`` raw messages; the same seed
    yields the same messages, so ``how`` plus the case number reproduce a
    failure.
    """

    RAW_CONTENT_TYPES = (
        "application/x-python-serialize",  # pickle
        "application/x-yaml",
        "application/x-msgpack",
        "application/data",
        "text/plain",
        "",
        None,
        "application/json; charset=binary",
        "APPLICATION/JSON",
        "application/jsonx",
    )

    def __init__(self, seed: int = 0, samples: list[Sample] | None = None) -> None:
        self.rng = random.Random(seed)
        self.samples = samples if samples is not None else load_samples()
        if not self.samples:
            raise ValueError("no captured samples to mutate (tests/data/*.ndjson)")

    # -- structural ----------------------------------------------------

    def hostile_value(self) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            # a copy: the tuple's lists and dicts must never be shared (or
            # a later mutation could make a document contain itself)
            return _copy(rng.choice(HOSTILE_VALUES))
        if roll < 0.7:
            return rng.choice(HOSTILE_NAMES)
        if roll < 0.8:
            return rng.randint(-(2**70), 2**70)
        if roll < 0.9:
            return "".join(
                chr(rng.choice([0, 7, 0x7F, 0x85, 0x2028, 0xFEFF, 0x10FFFF, 65, 0x1F600]))
                for _ in range(rng.randint(1, 20))
            )
        nested: Any = _copy(rng.choice(HOSTILE_VALUES))
        for _ in range(rng.randint(1, 40)):
            nested = [nested] if rng.random() < 0.5 else {"k": nested}
        return nested

    def mutate_body(self, body: Any) -> tuple[Any, str]:
        """One to three structural mutations of a decoded body."""
        rng = self.rng
        obj = _copy(body)
        how: list[str] = []
        for _ in range(rng.randint(1, 3)):
            paths = _paths(obj)
            path = rng.choice(paths)
            op = rng.choice(
                ("replace", "replace", "replace", "delete", "add", "blowup", "nest", "retype")
            )
            try:
                target = _get(obj, path)
            except (KeyError, IndexError, TypeError):
                continue
            if op == "replace" or (op == "delete" and not path):
                obj = _set(obj, path, self.hostile_value())
            elif op == "delete":
                parent = _get(obj, path[:-1])
                del parent[path[-1]]
            elif op == "add":
                if isinstance(target, dict):
                    target[
                        rng.choice(
                            [
                                "clock",
                                "hostname",
                                "type",
                                "revoked",
                                "id",
                                "method",
                                "arguments",
                                "x" * rng.randint(1, 300),
                                rng.choice(HOSTILE_NAMES)[:100],
                            ]
                        )
                    ] = self.hostile_value()
                elif isinstance(target, list):
                    target.append(self.hostile_value())
                else:
                    obj = _set(obj, path, [target, self.hostile_value()])
            elif op == "blowup":
                count = rng.choice((10, 1000, 60_000))
                item = target if not isinstance(target, (dict, list)) else "id"
                if isinstance(item, str):
                    item = item[:100]  # 60,000 copies of a 100 kB name would be 6 GB
                obj = _set(
                    obj, path, [item if rng.random() < 0.5 else f"{item}-{i}" for i in range(count)]
                )
            elif op == "nest":
                leaf = target if not isinstance(target, (dict, list)) else 0
                obj = _set(obj, path, json.loads(deep_nesting(rng.choice((5, 31, 33, 200)), leaf)))
            else:  # retype: same value, another JSON type
                if isinstance(target, dict):
                    obj = _set(obj, path, list(target.items()))
                elif isinstance(target, list):
                    obj = _set(obj, path, {str(i): v for i, v in enumerate(target)})
                elif isinstance(target, str):
                    obj = _set(obj, path, [target])
                elif isinstance(target, bool) or target is None:
                    obj = _set(obj, path, str(target))
                elif isinstance(target, (int, float)):
                    obj = _set(obj, path, str(target))
            how.append(f"{op}@{'/'.join(map(str, path))[:80]}")
        return obj, ",".join(how)

    def mutate_headers(self, headers: dict[str, Any]) -> tuple[dict[str, Any], str]:
        rng = self.rng
        headers = dict(headers)
        if rng.random() < 0.5:
            key = rng.choice(list(headers) + ["clock", "hostname", "ticket", "expires"])
            headers[key] = self.hostile_value()
            return headers, f"header:{key}"
        return headers, ""

    # -- raw -----------------------------------------------------------

    def mutate_bytes(self, data: bytes) -> tuple[bytes, str]:
        rng = self.rng
        op = rng.choice(
            ("truncate", "flip", "insert", "badutf8", "garbage", "huge", "deep", "nan", "bigint")
        )
        if op == "truncate" and data:
            return data[: rng.randrange(len(data))], op
        if op == "flip" and data:
            buf = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            return bytes(buf), op
        if op == "insert":
            pos = rng.randrange(len(data) + 1)
            return data[:pos] + rng.choice(
                (b",", b"]", b"}", b'"', b"\\", b"\x00", b"\xff")
            ) + data[pos:], op
        if op == "badutf8":
            return data + b"\xc3\x28\xed\xa0\x80", op
        if op == "garbage":
            return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))), op
        if op == "huge":
            return b'{"pad": "' + b"x" * (9 * 1024 * 1024) + b'"}', op
        if op == "deep":
            return deep_nesting(rng.choice((33, 1000, 100_000))).encode(), op
        if op == "nan":
            return (
                b'{"clock": NaN, "timestamp": Infinity, "type": "worker-heartbeat", "hostname": "x@y"}',
                op,
            )
        return b'{"clock": ' + b"9" * rng.choice((20, 5000)) + b"}", op

    # -- messages ------------------------------------------------------

    def message(self, sample: Sample | None = None) -> RawMessage:
        rng = self.rng
        sample = sample or rng.choice(self.samples)
        ctype: str | None = sample.content_type
        encoding: str | None = "utf-8"
        roll = rng.random()
        headers, hhow = self.mutate_headers(sample.headers)
        if roll < 0.55:
            body_obj, how = self.mutate_body(sample.body)
            body = _dumps(body_obj)
            if len(body) > MAX_GENERATED:
                body, how = b'{"pad": "' + b"x" * (9 * 1024 * 1024) + b'"}', how + ",capped"
        elif roll < 0.8:
            body, how = self.mutate_bytes(_dumps(sample.body))
        elif roll < 0.9:
            body = _dumps(sample.body)
            ctype = rng.choice(self.RAW_CONTENT_TYPES)
            how = f"content-type={ctype!r}"
        elif roll < 0.95:
            body = _dumps(sample.body)
            encoding = rng.choice(("binary", "latin-1", "utf-16", "rot13", "no-such-codec", None))
            how = f"encoding={encoding!r}"
        else:
            body = _dumps(sample.body)
            how = "unchanged"
        return RawMessage(
            body,
            ctype,
            encoding,
            headers,
            sample.routing_key,
            sample.kind,
            ",".join(filter(None, (how, hhow))),
        )

    def messages(self, n: int, kinds: tuple[str, ...] | None = None) -> Iterator[RawMessage]:
        pool = [s for s in self.samples if kinds is None or s.kind.startswith(kinds)]
        if not pool:
            raise ValueError(f"no samples of kinds {kinds}")
        for _ in range(n):
            yield self.message(self.rng.choice(pool))

    def bodies(self, n: int, kinds: tuple[str, ...] | None = None) -> Iterator[tuple[Any, str]]:
        """Mutated *decoded* bodies (for library entry points that take objects)."""
        pool = [s for s in self.samples if kinds is None or s.kind.startswith(kinds)]
        for _ in range(n):
            sample = self.rng.choice(pool)
            yield self.mutate_body(sample.body)


def with_kind(message: RawMessage, **changes: Any) -> RawMessage:
    return replace(message, **changes)
