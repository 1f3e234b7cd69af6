"""Inbound messages as the core takes them, and the checks every one
passes before a handler sees it: decoding (:func:`wkctl.protocol.wire.decode_body`,
JSON only, bounded) and the spec's schemas (:func:`schema_problem`).
Rejections are logged at most once per sender per interval
(:class:`RejectLimiter`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import validation
from .wire import JSON_CONTENT_TYPE, Limits, Rejected, decode_body, printable

__all__ = [
    "DETAIL_LIMIT",
    "INVALID",
    "MAX_REJECT_SENDERS",
    "Decoded",
    "Inbound",
    "RejectLimiter",
    "body_size",
    "schema_problem",
]

#: Senders remembered by the reject rate limiter.
MAX_REJECT_SENDERS = 1024

#: Bodies up to this size get a detailed schema error in the log; larger
#: invalid ones only a summary, since the detailed (jsonschema) pass over a
#: multi-megabyte body takes seconds: one such message must not stall a node.
DETAIL_LIMIT = 64 * 1024


def schema_problem(body: object, kind: str, size: int | None = None) -> str:
    """Why ``body`` is not a valid ``kind`` message per the spec schemas, or ``""``.

    ``size`` is the length of the raw body: the detailed explanation is only
    computed for bodies up to ``DETAIL_LIMIT`` bytes (the fast check always
    runs).  A validator fault (an unknown kind, a bug) propagates: a check
    that cannot run never counts as passed."""
    if validation.is_valid(body, kind):
        return ""
    if size is None or size > DETAIL_LIMIT:
        shown = "a large body" if size is None else f"a {size}-byte body"
        return f"not a valid {kind} message (details not computed for {shown})"
    issues = validation.validate(body, kind)
    return "; ".join(printable(str(i), 200) for i in issues[:3])


#: The body of a message that could not be decoded.
INVALID: Any = object()


class Decoded:
    """An inbound body decoded, and schema-checked on demand, once for all
    the nodes of a process.

    A binding hosting many nodes hands every event to each of them; decoding
    and validating the same bytes once per node was a third of such a
    process's time.  Only a node with equal :class:`Limits` uses it (the
    limits decide what is rejected), and the body is shared: nodes only
    read it (what reaches election handlers is copied).
    """

    __slots__ = ("limits", "body", "error", "_problems")

    def __init__(self, msg: Inbound, limits: Limits) -> None:
        self.limits = limits
        #: The decoded body, or ``INVALID`` with ``error`` saying why.
        self.body: Any = INVALID
        self.error = ""
        try:
            self.body = decode_body(msg.body, msg.content_type, msg.content_encoding, limits)
        except Rejected as exc:
            self.error = str(exc)
        self._problems: dict[tuple[str, int | None], str] = {}

    def schema_problem(self, kind: str, size: int | None) -> str:
        """:func:`schema_problem` of the body, computed once per ``kind``."""
        key = (kind, size)
        problem = self._problems.get(key)
        if problem is None:
            problem = self._problems[key] = schema_problem(self.body, kind, size)
        return problem


@dataclass(frozen=True)
class Inbound:
    """One message as it came off the broker, not yet decoded (or decoded
    once for many nodes: ``decoded``, see :meth:`predecoded`)."""

    body: bytes | str | None
    content_type: str | None = JSON_CONTENT_TYPE
    content_encoding: str | None = "utf-8"
    headers: Mapping[str, Any] = field(default_factory=dict)
    routing_key: str = ""
    decoded: Decoded | None = field(default=None, compare=False, repr=False)

    def predecoded(self, limits: Limits) -> Inbound:
        """This message with its body decoded once under ``limits``: nodes
        with those limits skip their own decode and schema checks."""
        return replace(self, decoded=Decoded(self, limits))

    @classmethod
    def json(
        cls, obj: Any, headers: Mapping[str, Any] | None = None, routing_key: str = ""
    ) -> Inbound:
        """An inbound JSON message built from a Python object (tests, in-process use)."""
        return cls(
            json.dumps(obj).encode(), JSON_CONTENT_TYPE, "utf-8", dict(headers or {}), routing_key
        )


class RejectLimiter:
    """At most one log line per sender per interval, counting the rest."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.total = 0

    def hit(self, sender: str, now: float) -> int | None:
        """``None`` to stay silent, else how many were suppressed before."""
        self.total += 1
        last = self._last.get(sender)
        if last is not None and now - last[0] < self.interval:
            self._last[sender] = (last[0], last[1] + 1)
            return None
        self._last[sender] = (now, 0)
        self._last.move_to_end(sender)
        while len(self._last) > MAX_REJECT_SENDERS:
            self._last.popitem(last=False)
        return 0 if last is None else last[1]


def body_size(msg: Inbound) -> int | None:
    """The raw body's length (decides whether a detailed schema error is computed)."""
    return len(msg.body) if msg.body is not None else None
