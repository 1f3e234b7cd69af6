"""Reply collection and the readings of ``hello`` replies (sans-IO).

The asking side's rules that operators' tools need and that are easy to get
subtly wrong, as plain code over decoded messages, with no broker, clock or
thread inside (the kombu :class:`~wkctl.protocol.client.Client` is the thin
adapter that feeds them):

* :class:`ReplyCollector`: ticket matching, expired replies (``now`` is
  wall-clock time, an input), the asker's Lamport clock adjusted from every
  reply's ``clock`` header, and when collection ends ([PIDBOX-19]);
* :func:`hello_table`, :func:`normalize_revoked`, :func:`normalize_clock`:
  the wire forms of ``hello``/``clock`` replies across Celery releases;
* :func:`asker_name`: the name a request is sent from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .clock import LamportClock
from .mingle import DEFAULT_MINGLE_SETTLE
from .wire import Limits, Rejected, decode_body

__all__ = [
    "DEFAULT_SETTLE",
    "KNOWN_GRACE",
    "Collected",
    "ReplyCollector",
    "asker_name",
    "hello_table",
    "normalize_clock",
    "normalize_revoked",
]

#: Default settle window of a request without ``expect``: the same quiet
#: time after the last reply that ends a node's Mingle round ([MINGLE-2]).
DEFAULT_SETTLE = DEFAULT_MINGLE_SETTLE
#: Once every node known to be alive replied, collection goes on only this
#: long, for a node that joined since (local replies arrive within it).
KNOWN_GRACE = 0.02


def asker_name(hostname: str, token: str) -> str:
    """The name a request is asked from: ``wkctl.<token>@<hostname>``.

    Not a node's name (that is :func:`wkctl.protocol.node.default_nodename`,
    ``wkctl@<hostname>``): Celery workers answer ``null`` to a ``hello``
    from their own name, so the asker must never borrow one, and the token
    (random, supplied by the caller) keeps two askers apart.
    """
    return f"wkctl.{token}@{hostname}"


def normalize_revoked(value: Any) -> list[str]:
    """Revoked ids of a ``hello`` reply as a list, whatever the wire form.

    Celery 5.7 sends a list of ids; 4.2 to 5.6 send the ``LimitedSet`` data,
    a mapping ``id -> [monotonic_timestamp, id]`` (or ``id -> timestamp``).
    Ids are arbitrary strings; anything else is dropped.  Order is kept
    (oldest first in both forms) and duplicates removed.
    """
    if value is None:
        return []
    if isinstance(value, Mapping):
        items: Iterable[Any] = value.keys()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return []
    seen: dict[str, None] = {}
    for item in items:
        if isinstance(item, str):
            seen.setdefault(item, None)
    return list(seen)


def normalize_clock(value: Any) -> int | None:
    """A clock value from a reply: ``{"clock": N}`` (the ``clock`` command) or N."""
    if isinstance(value, Mapping):
        value = value.get("clock")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def hello_table(replies: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{node: {"clock": int, "revoked": [ids]}}`` from ``hello`` reply values.

    A ``null`` value (a worker asked by its own name) and malformed values
    are left out: they carry no state.
    """
    table: dict[str, dict[str, Any]] = {}
    for node, value in replies.items():
        if not isinstance(value, Mapping):
            continue
        table[node] = {
            "clock": normalize_clock(value.get("clock")),
            "revoked": normalize_revoked(value.get("revoked")),
        }
    return table


@dataclass
class Collected:
    """The outcome of one broadcast."""

    method: str
    ticket: str | None
    #: node name -> reply value, first reply of each node wins
    replies: dict[str, Any] = field(default_factory=dict)
    #: every accepted reply body exactly as decoded, in arrival order
    raw: list[Any] = field(default_factory=list)
    #: messages refused (wrong ticket excluded): (reason, detail)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    expect: int | None = None
    timeout: float = 0.0
    #: seconds from publishing the request to the last accepted reply
    elapsed: float | None = None
    #: seconds from publishing to the end of collection
    waited: float = 0.0
    published_at: float = 0.0
    #: why collection ended: ``expect`` (N nodes answered), ``known`` (every
    #: node known alive answered), ``settled`` (no reply for the settle
    #: window) or ``timeout``
    ended: str = "timeout"

    @property
    def complete(self) -> bool:
        return self.expect is not None and len(self.replies) >= self.expect

    @property
    def elapsed_ms(self) -> float | None:
        return None if self.elapsed is None else round(self.elapsed * 1000.0, 3)

    def meta(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "replied": len(self.replies),
            "expect": self.expect,
            "timeout": self.timeout,
            "elapsed_ms": self.elapsed_ms,
            "waited_ms": round(self.waited * 1000.0, 3),
            "rejected": len(self.rejected),
            "ended": self.ended,
        }


class ReplyCollector:
    """Collects the replies to one request (kombu ``Mailbox._collect`` rules).

    Feed it every message arriving on the reply queue; it adjusts the clock
    from the ``clock`` header, drops replies whose ``expires`` header has
    passed and replies to another ticket, and says when collection is over
    (:meth:`end_at`, :meth:`over`).  Time is passed in explicitly, and it is
    **wall-clock time** (``time.time()``): ``expires`` headers are Unix
    times, so any other clock would make expiry never (or always) fire.

    When it is over ([PIDBOX-19], the fix of DEFECT-9):

    * with ``expect`` N: once N distinct nodes replied (or at the timeout);
    * otherwise, with a ``settle`` window: once every node of ``known`` (the
      nodes known to be alive) replied, plus :data:`KNOWN_GRACE`; or once no
      reply arrived for ``max(settle, latency of the first reply)`` after the
      last one: replies to a broadcast come in one burst, so a quiet window
      as long as the first round trip means the cluster has answered;
    * without ``settle`` (``None``): at the timeout, as Celery does.

    ``timeout`` after publishing is always the upper bound.
    """

    def __init__(
        self,
        method: str,
        ticket: str | None,
        *,
        expect: int | None = None,
        clock: LamportClock | None = None,
        limits: Limits | None = None,
        published_at: float = 0.0,
        timeout: float = 1.0,
        settle: float | None = None,
        known: Iterable[str] = (),
    ) -> None:
        self.clock = clock or LamportClock()
        self.limits = limits or Limits()
        self.settle = settle
        self.known = frozenset(known)
        self.first_reply: float | None = None
        self.last_reply: float | None = None
        self.result = Collected(
            method=method, ticket=ticket, expect=expect, timeout=timeout, published_at=published_at
        )

    @property
    def done(self) -> bool:
        """True once ``expect`` distinct nodes replied (the time-free end)."""
        return self.result.complete

    def end_at(self) -> float:
        """When collection is over if nothing else arrives (wall-clock time)."""
        result = self.result
        hard = result.published_at + result.timeout
        if (
            result.expect is not None
            or self.settle is None
            or self.first_reply is None
            or self.last_reply is None
        ):
            return hard
        window = max(self.settle, self.first_reply - result.published_at)
        if self.known and self.known <= result.replies.keys():
            window = min(window, KNOWN_GRACE)
        return min(hard, self.last_reply + window)

    def over(self, now: float) -> bool:
        """Whether collection is over at ``now``; records why in ``result.ended``."""
        if self.done:
            self.result.ended = "expect"
            return True
        end = self.end_at()
        if now < end:
            return False
        hard = self.result.published_at + self.result.timeout
        if end >= hard:
            self.result.ended = "timeout"
        elif self.known and self.known <= self.result.replies.keys():
            self.result.ended = "known"
        else:
            self.result.ended = "settled"
        return True

    def feed_message(
        self,
        body: bytes | str | None,
        content_type: str | None,
        content_encoding: str | None,
        headers: Mapping[str, Any] | None,
        now: float,
    ) -> bool:
        """Decode (JSON only) and feed one raw message; False when refused."""
        try:
            decoded = decode_body(body, content_type, content_encoding, self.limits)
        except Rejected as exc:
            self.result.rejected.append((exc.reason, exc.detail))
            return False
        return self.feed(decoded, headers or {}, now)

    def feed(self, body: Any, headers: Mapping[str, Any], now: float) -> bool:
        if "clock" in headers:
            self.clock.receive(headers.get("clock"))
        expires = headers.get("expires")
        if isinstance(expires, (int, float)) and expires and now > expires:
            self.result.rejected.append(("expired", f"expired at {expires}"))
            return False
        ticket = headers.get("ticket", self.result.ticket)
        if ticket != self.result.ticket:
            return False  # another request's reply: not ours, not an error
        if not isinstance(body, dict) or not body:
            self.result.rejected.append(("not a reply", f"body is {type(body).__name__}"))
            return False
        accepted = False
        for node, value in body.items():
            if not isinstance(node, str) or len(node) > self.limits.max_nodename_length:
                self.result.rejected.append(("bad node name", repr(node)[:80]))
                continue
            if node not in self.result.replies:
                self.result.replies[node] = value
            accepted = True
        if accepted:
            self.result.raw.append(body)
            self.result.elapsed = max(0.0, now - self.result.published_at)
            if self.first_reply is None:
                self.first_reply = now
            self.last_reply = now
        return accepted
