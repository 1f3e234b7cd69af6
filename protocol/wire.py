"""Names, shapes and decoding of the messages that travel on the broker.

Everything here is pure: it builds and reads message bodies and headers,
it never talks to a broker.  The kombu binding and the CLI both use it, so
that there is exactly one place that knows how Celery spells an exchange,
a routing key or a pidbox request (see the spec's transport section).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .vocab import WKCTL_SW_IDENT

__all__ = [
    "JSON_CONTENT_TYPE",
    "KOMBU_MATCHERS",
    "Limits",
    "Names",
    "Rejected",
    "decode_body",
    "request_problem",
    "event",
    "event_routing_key",
    "expand_batch",
    "pidbox_reply",
    "pidbox_request",
    "printable",
]

#: The only content type wkctl deserializes; pickle, yaml and msgpack are
#: refused unread because any process with broker access can publish them.
JSON_CONTENT_TYPE = "application/json"

#: Celery's software identification, echoed in heartbeats by wkctl nodes
#: under their own name so monitors can tell them apart.
SW_IDENT = WKCTL_SW_IDENT


@dataclass(frozen=True)
class Names:
    """Exchange and queue names, derived from Celery's settings.

    Celery lets an app rename its control exchange (``control_exchange``,
    default ``celery``) and its event exchange (``event_exchange``, default
    ``celeryev``); every other name follows from those two, exactly as
    kombu's ``Mailbox`` and Celery's event ``Receiver`` derive them.
    """

    control_exchange: str = "celery"
    event_exchange: str = "celeryev"
    event_queue_prefix: str = "celeryev"
    #: seconds a message may wait in our event queue (Celery: event_queue_ttl)
    event_queue_ttl: float | None = 5.0
    #: seconds an unused event queue survives (Celery: event_queue_expires)
    event_queue_expires: float | None = 60.0
    #: seconds a message may wait in a pidbox queue (control_queue_ttl)
    control_queue_ttl: float | None = 300.0
    #: seconds an unused pidbox queue survives (control_queue_expires)
    control_queue_expires: float | None = 10.0

    @property
    def pidbox_exchange(self) -> str:
        """Fanout exchange every node's pidbox queue is bound to."""
        return f"{self.control_exchange}.pidbox"

    @property
    def reply_exchange(self) -> str:
        """Direct exchange replies are published to (routing key = the asker's oid)."""
        return f"reply.{self.control_exchange}.pidbox"

    def node_queue(self, hostname: str) -> str:
        """The pidbox queue of one node, as kombu names it."""
        return f"{hostname}.{self.control_exchange}.pidbox"

    def reply_queue(self, oid: str) -> str:
        """The reply queue of one asker, as kombu names it."""
        return f"{oid}.{self.reply_exchange}"

    def event_queue(self, node_id: str) -> str:
        return f"{self.event_queue_prefix}.{node_id}"


class Rejected(ValueError):
    """An inbound message was refused before it reached the protocol core.

    ``reason`` is a short, stable phrase (it is what gets logged, counted
    and rate-limited per sender); ``detail`` says what exactly was wrong.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    """Bounds on every inbound structure (spec: limits section).

    The defaults are large enough for the biggest message a real Celery
    worker sends (a ``hello`` reply holding 50,000 revoked ids in the 5.4
    mapping form is about 4 MiB) and small enough that no single message
    can exhaust a node.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_depth: int = 32
    max_revoked: int = 50_000
    max_clock_jump: int = 10_000_000
    max_nodename_length: int = 1024
    extra: Mapping[str, Any] = field(default_factory=dict)


_DEFAULT_LIMITS = Limits()


def _check_depth(obj: Any, max_depth: int) -> None:
    # Iterative so that hostile nesting can never exhaust the C stack.
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise Rejected("too deeply nested", f"more than {max_depth} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity, which are not JSON
    # (RFC 8259): a node that accepted them would echo them (an election
    # action, for instance) to peers whose parsers refuse them.
    raise Rejected("invalid JSON", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise Rejected("invalid JSON", f"number {text[:40]} is out of range")
    return value


#: A float exponent of three digits or more: the only way a JSON number
#: literal overflows to infinity.  Bodies without one skip the slower,
#: per-float check.
_BIG_EXPONENT = re.compile(r"[eE]\+?0*[0-9]{3,}")
_STRICT = json.JSONDecoder(parse_constant=_reject_constant)
_STRICT_FLOATS = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def decode_body(
    body: bytes | str | None,
    content_type: str | None,
    content_encoding: str | None = "utf-8",
    limits: Limits = _DEFAULT_LIMITS,
) -> Any:
    """Decode an inbound body, refusing anything but bounded JSON.

    Raises :class:`Rejected` naming the reason; never deserializes another
    content type (``pickle`` in particular would let any broker user run
    code on every node).
    """
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype != JSON_CONTENT_TYPE:
        raise Rejected(
            "content type refused", f"{content_type or 'none'!s} is not {JSON_CONTENT_TYPE}"
        )
    if body is None:
        raise Rejected("empty body")
    size = len(body)
    if size > limits.max_body_bytes:
        raise Rejected("body too large", f"{size} bytes > {limits.max_body_bytes}")
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode(content_encoding or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            raise Rejected("undecodable body", str(exc)) from None
    try:
        decoder = _STRICT_FLOATS if _BIG_EXPONENT.search(body) else _STRICT
        obj = decoder.decode(body)
    except Rejected:
        raise
    except RecursionError:
        raise Rejected("too deeply nested", f"more than {limits.max_depth} levels") from None
    except ValueError as exc:
        raise Rejected("invalid JSON", str(exc)) from None
    # Nesting needs one bracket per level: a body with fewer brackets than the
    # bound cannot exceed it, which spares the walk for nearly every message
    # (the check is on the hot path of tail and of every node).
    if isinstance(obj, (dict, list)) and body.count("{") + body.count("[") > limits.max_depth:
        _check_depth(obj, limits.max_depth)
    return obj


def printable(text: object, limit: int = 200) -> str:
    """A peer-supplied value fit for one log line: escaped, bounded.

    Node names and other strings come from any process with broker access;
    logged raw, a newline forges log lines and an escape sequence reaches
    the operator's terminal.
    """
    s = text if isinstance(text, str) else repr(text)
    s = s.encode("unicode_escape", "backslashreplace").decode("ascii")
    return s if len(s) <= limit else s[:limit] + "..."


def event_routing_key(type_: str) -> str:
    """Celery publishes ``worker-elect-ack`` with routing key ``worker.elect.ack``."""
    return type_.replace("-", ".")


def event(
    type_: str,
    *,
    hostname: str,
    clock: int | None,
    pid: int,
    timestamp: float,
    utcoffset: float,
    **fields: Any,
) -> dict[str, Any]:
    """Build an event body with the fields Celery's dispatcher always adds.

    Every stamp is an input (:func:`wkctl.protocol.host.local_event` fills
    them from the running process)."""
    body: dict[str, Any] = dict(fields)
    body.update(
        hostname=hostname,
        utcoffset=utcoffset,
        pid=pid,
        clock=clock,
        timestamp=timestamp,
        type=type_,
    )
    return body


def expand_batch(body: Any) -> list[Any]:
    """Events of one message: Celery buffers task events into a JSON list
    published with routing key ``task.multi``; every other event is a dict."""
    if isinstance(body, list):
        return body
    return [body]


def pidbox_request(
    method: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    destination: Iterable[str] | None = None,
    reply_exchange: str | None = None,
    reply_routing_key: str | None = None,
    ticket: str | None = None,
    pattern: str | None = None,
    matcher: str | None = None,
) -> dict[str, Any]:
    """A pidbox request body exactly as kombu's ``Mailbox._publish`` builds it.

    ``ticket``/``reply_to`` are present only when a reply is wanted; Celery
    sends ``election``, ``revoke`` (without ``--reply``) and ``heartbeat`` as
    casts without them.
    """
    body: dict[str, Any] = {
        "method": method,
        "arguments": dict(arguments or {}),
        "destination": list(destination) if destination is not None else None,
        "pattern": pattern,
        "matcher": matcher,
    }
    if reply_exchange is not None:
        if not ticket:
            raise ValueError("a request that wants replies needs a ticket")
        body["ticket"] = ticket
        body["reply_to"] = {"exchange": reply_exchange, "routing_key": reply_routing_key}
    return body


#: kombu's matchers ([PIDBOX-4]); any other makes kombu raise (DEFECT-15)
KOMBU_MATCHERS = ("glob", "pcre")


def request_problem(body: object, reply_exchange: str) -> str:
    """Why a decoded control request cannot be run at all, or ``""`` ([PIDBOX-21]).

    These are the requests kombu's ``Node.handle_message`` raises on outside
    the command handler (which Celery answers by resetting its control
    channel: DEFECT-27): a body that is not an object ([PIDBOX-1]), no
    ``method`` string, ``arguments`` that are not an object (kombu formats
    them for its debug line before anything else), a field ``self`` (kombu
    calls ``dispatch(**body)``), a ``destination`` that is not a list, a
    ``pattern``/``matcher`` kombu cannot match with ([PIDBOX-18]), a
    ``reply_to`` that is not an object naming the ``reply_exchange``, with a
    string ``ticket`` ([PIDBOX-5]: replying to any exchange a peer names would declare, and on
    RabbitMQ clash with, arbitrary exchanges)."""
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        return "not a pidbox request object"
    if "self" in body:  # kombu calls dispatch(**body): a second "self"
        return "field 'self' is not a request field"
    if body.get("arguments") is not None and not isinstance(body["arguments"], dict):
        return "arguments is not an object"
    destination = body.get("destination")
    if destination and not isinstance(destination, list):
        return "destination is not a list"
    pattern, matcher = body.get("pattern"), body.get("matcher")
    if pattern and matcher:
        if matcher not in KOMBU_MATCHERS or not isinstance(pattern, str):
            return f"matcher {str(matcher)[:50]!r} with pattern {str(pattern)[:50]!r} is not usable"
        if matcher == "pcre":
            try:
                re.compile(pattern)
            except re.error as exc:
                return f"pattern is not a regular expression: {exc}"
    reply_to = body.get("reply_to")
    if reply_to:
        if not isinstance(reply_to, dict) or not isinstance(reply_to.get("routing_key"), str):
            return "reply_to malformed"
        if not isinstance(body.get("ticket"), str):
            return "reply_to/ticket malformed"
        if reply_to.get("exchange") != reply_exchange:
            return f"reply_to exchange {str(reply_to.get('exchange'))[:100]!r} is not ours"
    return ""


def pidbox_request_headers(clock: int, timeout: float | None, now: float) -> dict[str, Any]:
    """Headers of a pidbox request: the sender's clock, and when it expires
    (``0`` for never, as kombu sends when no timeout is given); ``now`` is
    wall-clock seconds."""
    return {"clock": clock, "expires": now + timeout if timeout else 0}


def pidbox_reply(hostname: str, value: Any) -> dict[str, Any]:
    """A reply body: one key, the replying node's name."""
    return {hostname: value}


def pidbox_reply_headers(ticket: str | None, clock: int) -> dict[str, Any]:
    return {"ticket": ticket, "clock": clock}
