"""The asking side of the protocol: pidbox broadcasts and the event stream.

Two layers, as everywhere in wkctl:

* sans-IO pieces that operators' tools need and that are easy to get
  subtly wrong: :class:`ReplyCollector` (ticket
  matching, expired replies, the asker's Lamport clock adjusted from every
  reply's ``clock`` header, early return once ``expect`` distinct nodes
  answered), :class:`ElectionWatch` (an election seen from outside: who
  stood, who acknowledged, who won), :func:`normalize_revoked` (the two wire forms of a ``hello``
  reply's revoked ids) and :func:`decode_events` (JSON-only decoding of one
  event message, ``task.multi`` batches expanded);
* a thin kombu layer: :class:`Client` publishes a request exactly as kombu's
  ``Mailbox._publish`` does, with a fresh reply queue per request, and
  :class:`EventStream` consumes the event exchange the way Celery's
  ``EventReceiver`` does, reconnecting with backoff when the broker drops.

Celery's own client (``celery inspect``, Mingle) always waits a fixed
timeout for replies because it cannot know how many nodes will answer; a
caller that knows (``--expect N``) gets its answer as soon as the Nth node
replied, and every result carries the measured time from publish to the
last reply so that benchmarks can use the command's own figure.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection, Consumer, Producer, Queue

from .broker import (
    BrokerSettings,
    event_exchange,
    pidbox_exchange,
    reply_exchange,
)
from .clock import LamportClock
from .election import (
    Arrival,
    CeleryRule,
    ElectRequest,
    Replayed,
    SpecRule,
    order_key,
    pick_winner,
)
from .host import SharedClock
from .mingle import DEFAULT_MINGLE_SETTLE
from .vocab import (
    CELERY_SW_IDENT,
    ELECT_ACK_EVENT,
    ELECT_EVENT,
    FANOUT_EVENT_TRANSPORTS,
    GOSSIP_TRANSPORTS,
    HEARTBEAT_TYPES,
    PeerKind,
    peer_kind,
)
from .wire import (
    Limits,
    Names,
    Rejected,
    decode_body,
    expand_batch,
    pidbox_request,
    pidbox_request_headers,
)

__all__ = [
    "Client",
    "CELERY_SW_IDENT",
    "DEFAULT_SETTLE",
    "KNOWN_GRACE",
    "ElectionOutcome",
    "ElectionWatch",
    "election_participants",
    "Collected",
    "EventStream",
    "ReplyCollector",
    "StreamNotice",
    "decode_events",
    "default_node_name",
    "hello_table",
    "normalize_clock",
    "normalize_revoked",
    "prepare_event",
]

logger = logging.getLogger(__name__)


#: Reason recorded when the transport itself cannot decode its envelope
#: (a transport decodes its own envelope before wkctl sees the body, so a
#: corrupt one surfaces as ``ValueError`` from the drain): the message is
#: counted as rejected and the stream goes on.
TRANSPORT_DECODE_ERROR = "unreadable transport envelope"

#: Default settle window of a request without ``expect``: the same quiet
#: time after the last reply that ends a node's Mingle round ([MINGLE-2]).
DEFAULT_SETTLE = DEFAULT_MINGLE_SETTLE
#: Once every node known to be alive replied, collection goes on only this
#: long, for a node that joined since (local replies arrive within it).
KNOWN_GRACE = 0.02


def default_node_name() -> str:
    """A name no worker has: Celery workers answer ``null`` to a ``hello``
    from their own name, so the asker must never borrow one."""
    return f"wkctl.{uuid.uuid4().hex[:8]}@{socket.gethostname()}"


# -- sans-IO -----------------------------------------------------------------


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
        self.clock = clock or SharedClock()
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


def decode_events(
    body: bytes | str | None,
    content_type: str | None,
    content_encoding: str | None = "utf-8",
    limits: Limits | None = None,
) -> list[Any]:
    """The events of one message on the event exchange (JSON only).

    Raises :class:`Rejected` for a body that is not bounded JSON; batches
    (``task.multi`` lists) come back as their individual events.  Items are
    returned as decoded (not necessarily dicts): judging them is the
    caller's business (``tail --validate``, State).
    """
    return expand_batch(decode_body(body, content_type, content_encoding, limits or Limits()))


def prepare_event(event: Any, clock: LamportClock, now: float) -> Any:
    """Stamp one decoded event as Celery's ``EventReceiver`` does before State.

    ``local_received`` is the local receive time (liveness is judged on it);
    a ``task-sent`` event gets the receiver's clock minus one (clients never
    sync their clocks), any other event's ``clock`` is merged into the local
    clock (bounded, see :class:`~wkctl.protocol.clock.LamportClock`) or, when
    missing, filled with the next local value.  Non-dict items pass unchanged.
    """
    if not isinstance(event, dict):
        return event
    if event.get("type") == "task-sent":
        value = (clock.value or 1) - 1
        event["clock"] = value
        clock.receive(value)
    elif "clock" in event:
        clock.receive(event["clock"])
    else:
        event["clock"] = clock.forward()
    event["local_received"] = now
    return event


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


@dataclass
class ElectionOutcome:
    """What an observer concluded about one election."""

    id: str
    topic: str | None
    #: the winner every participant picked (``None`` when they disagree or
    #: when nobody decided)
    winner: ElectRequest | None
    candidates: list[ElectRequest]
    acks: int
    #: candidates that did not acknowledge every request (empty when complete)
    not_acked: list[str]
    #: participants expected to stand (seen alive before) that never sent worker-elect
    absent: list[str]
    #: every ``worker-elect-ack`` of every candidate arrived (N^2 acks)
    complete: bool
    #: seconds from the ``election`` command to the moment the spec's rule
    #: fixed the winner (the request of every expected participant in; with
    #: none expected: every ack in)
    elapsed: float | None
    #: seconds to the last ack, when ``complete``
    completed: float | None = None
    #: seconds until every participant had decided (replayed)
    settled: float | None = None
    #: per participant: what it decided, replayed by its own rule
    decisions: dict[str, Replayed] = field(default_factory=dict)
    #: participant -> peer kind (``wkctl.protocol.vocab.peer_kind``)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def sides(self) -> dict[str, list[str]]:
        """Winner id -> the participants that picked it (``"crashed"`` for
        Celery workers whose decision raised)."""
        out: dict[str, list[str]] = {}
        for host, d in sorted(self.decisions.items()):
            if d.crashed:
                out.setdefault("crashed", []).append(host)
            elif d.winner is not None:
                out.setdefault(d.winner.node_id, []).append(host)
        return out

    @property
    def agreed(self) -> bool:
        """Every participant that decided picked the same winner, none crashed."""
        sides = self.sides
        return len(sides) <= 1 and "crashed" not in sides

    @property
    def runners(self) -> list[str]:
        """The participants that picked themselves: they run the action
        ([ELECT-8]); more than one, or none, when participants disagree."""
        return sorted(
            h for h, d in self.decisions.items() if d.winner is not None and d.winner.hostname == h
        )

    @property
    def undecided(self) -> list[str]:
        return sorted(h for h, d in self.decisions.items() if not d.decided)

    def as_dict(self) -> dict[str, Any]:
        """The ``wkctl elect --json`` document."""
        return {
            "id": self.id,
            "topic": self.topic,
            "winner": self.winner.hostname if self.winner else None,
            "winner_id": self.winner.node_id if self.winner else None,
            "agreed": self.agreed,
            "candidates": [
                {"hostname": c.hostname, "id": c.node_id, "pid": c.pid, "clock": c.clock}
                for c in self.candidates
            ],
            "decisions": {
                host: {
                    "kind": self.kinds.get(host, "other"),
                    "rule": d.rule,
                    "winner": d.winner.node_id if d.winner else None,
                    "crashed": d.crashed,
                    "requests_counted": d.counted,
                }
                for host, d in sorted(self.decisions.items())
            },
            "runs_action": self.runners,
            "acks": self.acks,
            "complete": self.complete,
            "elapsed_ms": _ms(self.elapsed),
            "decided_ms": _ms(self.settled),
            "completed_ms": _ms(self.completed),
        }


class ElectionWatch:
    """An election seen from outside, through its events (sans-IO).

    ``participants`` maps each node seen alive before the election (its
    fixed participant set, [ELECT-4]) to its peer kind.  The watch keeps
    the order in which ``worker-elect`` and ``worker-elect-ack`` events
    reached its queue and replays, for every participant, the rule it
    follows: Celery's own (:func:`~wkctl.protocol.election.replay_celery`,
    DEFECT-1/2) for stock Celery workers, the spec's
    (:func:`~wkctl.protocol.election.replay_spec`) for every other kind.
    Every consumer of the event exchange receives one sender's events in
    the order it sent them, and the election's events are all caused by
    the one ``election`` command, so the watch's order is the order each
    participant processed ([ELECT-11]).

    The winner is *fixed* once the request of every participant is in: no
    later request can come from the fixed set, and the spec's rule picks
    the lowest of them (``fixed_at``).  ``settled`` says every participant
    has decided (what the report needs); ``complete`` that every candidate
    acknowledged every request.
    """

    def __init__(
        self,
        id: str,
        *,
        participants: Mapping[str, str] | None = None,
        expected: Iterable[str] = (),
        alive: Iterable[str] = (),
        started_at: float = 0.0,
        max_candidates: int = 10_000,
    ) -> None:
        self.id = id
        self.kinds: dict[str, str] = dict(participants or {})
        for host in expected:
            self.kinds.setdefault(host, "other")
        self.expected = frozenset(self.kinds)
        #: the nodes a Celery participant counts alive (itself included):
        #: every node that sent a heartbeat, participant or not
        self.alive = set(alive) | self.expected
        self.started_at = started_at
        self.max_candidates = max_candidates
        self.requests: dict[str, ElectRequest] = {}
        self.arrivals: list[Arrival] = []
        self.times: list[float] = []
        self.acks_by: dict[str, int] = {}
        self.acks = 0
        self.ignored = 0
        self.rules: dict[str, CeleryRule | SpecRule] = {}
        for host in self.expected:
            self._rule(host)
        self.undecided = set(self.expected)
        self.fixed_at: float | None = None
        self.decided_at: float | None = None
        self.completed_at: float | None = None

    def _seen_alive(self, host: Any) -> None:
        """A node not seen before is alive: Celery participants count it
        among their peers, so their replays start over with it."""
        if not isinstance(host, str) or not host or host in self.alive:
            return
        self.alive.add(host)
        for name, rule in list(self.rules.items()):
            if isinstance(rule, CeleryRule):
                del self.rules[name]
                if self._rule(name).result is None:
                    self.undecided.add(name)
                else:
                    self.undecided.discard(name)

    def _rule(self, host: str) -> CeleryRule | SpecRule:
        rule = self.rules.get(host)
        if rule is None:
            if self.kinds.get(host) == "celery":
                rule = CeleryRule(host, len(self.alive - {host}))
            else:
                rule = SpecRule(host, self.expected)
            for arrival in self.arrivals:  # a node that stood unexpectedly
                rule.feed(arrival)
            self.rules[host] = rule
        return rule

    def feed(self, event: Any, now: float) -> bool:
        """Take one decoded event; True when it completed the election."""
        if not isinstance(event, dict):
            return False
        type_ = event.get("type")
        if type_ in HEARTBEAT_TYPES:
            if type_ != "worker-offline":
                self._seen_alive(event.get("hostname"))
            return False
        if event.get("id") != self.id:
            return False
        if type_ == ELECT_EVENT:
            request = ElectRequest.from_event(event)
            if request is None:
                self.ignored += 1
                return False
            if request.hostname not in self.requests:
                if len(self.requests) >= self.max_candidates:
                    self.ignored += 1
                    return False
                self.requests[request.hostname] = request
                self._seen_alive(request.hostname)
                if self.expected and request.hostname not in self.rules:
                    self._rule(request.hostname)  # stood unexpectedly: its rule, from the start
                    self.undecided.add(request.hostname)
            arrival = Arrival(request.hostname, request)
        elif type_ == ELECT_ACK_EVENT:
            hostname = event.get("hostname")
            if not isinstance(hostname, str) or not hostname:
                self.ignored += 1
                return False
            if len(self.arrivals) >= self.max_candidates * (self.max_candidates + 1):
                self.ignored += 1
                return False
            self.acks += 1
            self.acks_by[hostname] = self.acks_by.get(hostname, 0) + 1
            arrival = Arrival(hostname)
        else:
            return False
        self.arrivals.append(arrival)
        self.times.append(now)
        for host, rule in self.rules.items():
            if rule.feed(arrival) is not None:
                self.undecided.discard(host)
        if self.fixed_at is None and self.expected and self.expected <= self.requests.keys():
            self.fixed_at = now
        if self.decided_at is None and self.settled:
            self.decided_at = now
        if self.completed_at is None and self.complete:
            self.completed_at = now
            return True
        return False

    def _not_acked(self) -> list[str]:
        need = len(self.requests)
        return sorted(h for h in self.requests if self.acks_by.get(h, 0) < need)

    @property
    def acks_complete(self) -> bool:
        return bool(self.requests) and not self._not_acked()

    @property
    def complete(self) -> bool:
        return self.acks_complete and self.expected <= self.requests.keys()

    def decisions(self) -> dict[str, Replayed]:
        """Each participant's decision, replayed on the arrivals so far (every
        node that stood, and every expected one)."""
        out: dict[str, Replayed] = {}
        for host, rule in sorted(self.rules.items()):
            out[host] = rule.result or Replayed(host, rule.rule)
        return out

    @property
    def settled(self) -> bool:
        """Every participant has decided (or crashed deciding), and the
        winner is fixed."""
        if not self.expected:  # nobody known before: the spec's rule once every ack is in
            return self.acks_complete
        if not self.requests or self.undecided:
            return False
        return self.expected <= self.requests.keys()

    def outcome(self) -> ElectionOutcome:
        """The result now."""
        candidates = sorted(self.requests.values(), key=order_key)
        decisions = self.decisions()
        picked = {d.winner for d in decisions.values() if d.winner is not None}
        crashed = any(d.crashed for d in decisions.values())
        winner: ElectRequest | None = None
        if len(picked) == 1 and not crashed:
            winner = next(iter(picked))
        elif not self.expected and self.acks_complete:
            winner = pick_winner(candidates)  # nobody known before: the spec's rule
        topic = winner.topic if winner else (candidates[0].topic if candidates else None)
        fixed = self.fixed_at if self.fixed_at is not None else self.decided_at
        return ElectionOutcome(
            id=self.id,
            topic=topic,
            winner=winner,
            candidates=candidates,
            acks=self.acks,
            not_acked=self._not_acked(),
            absent=sorted(self.expected - self.requests.keys()),
            complete=self.complete,
            elapsed=None if fixed is None or winner is None else fixed - self.started_at,
            completed=None if self.completed_at is None else self.completed_at - self.started_at,
            settled=None if self.decided_at is None else self.decided_at - self.started_at,
            decisions=decisions,
            kinds=dict(self.kinds),
        )


def election_participants(
    heartbeats: Mapping[str, Mapping[str, Any]], transport: str
) -> dict[str, PeerKind]:
    """Hostname -> peer kind of every node that stands in an election.

    Celery workers run Gossip (and so elections) only on amqp and redis;
    elsewhere they ignore elections, and only the other kinds stand.
    """
    gossip = transport in GOSSIP_TRANSPORTS
    out: dict[str, PeerKind] = {}
    for host, hb in heartbeats.items():
        kind = peer_kind(hb)
        if kind in ("celery", "hardened") and not gossip:
            continue
        out[host] = kind
    return out


# -- kombu binding -----------------------------------------------------------


class Client:
    """Publishes pidbox requests and collects their replies over one connection.

    Requests are built exactly as kombu's ``Mailbox._publish`` builds them
    (fanout ``<control_exchange>.pidbox``, headers ``clock`` and
    ``expires``); each request that wants replies gets a fresh exclusive
    reply queue bound to the reply exchange with its own routing key, which
    is declared before publishing so that no reply can be lost.
    """

    def __init__(
        self,
        connection: Connection,
        names: Names | None = None,
        *,
        clock: LamportClock | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.connection = connection
        self.names = names or Names()
        self.limits = limits or Limits()
        self.clock = clock or SharedClock(max_jump=self.limits.max_clock_jump)
        self._exchange = pidbox_exchange(self.names)
        self._reply_exchange = reply_exchange(self.names)
        self._channel: Any = None

    @property
    def channel(self) -> Any:
        if self._channel is None:
            self._channel = self.connection.channel()
        return self._channel

    def close(self) -> None:
        if self._channel is not None:
            try:
                self._channel.close()
            except Exception:  # closing a dead channel must not mask the real error
                pass
            self._channel = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reply_queue(self, oid: str) -> Queue:
        return Queue(
            self.names.reply_queue(oid),
            exchange=self._reply_exchange,
            routing_key=oid,
            durable=False,
            exclusive=True,
            auto_delete=True,
            expires=self.names.control_queue_expires,
            message_ttl=self.names.control_queue_ttl,
        )

    def _publish(self, body: dict[str, Any], timeout: float | None) -> None:
        producer = Producer(self.channel, auto_declare=False)
        producer.publish(
            body,
            exchange=self._exchange.name,
            routing_key="",
            declare=[self._exchange],
            headers=pidbox_request_headers(self.clock.forward(), timeout, time.time()),
            serializer="json",
            retry=True,
        )

    def cast(
        self,
        method: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        destination: Sequence[str] | None = None,
        timeout: float | None = 1.0,
    ) -> None:
        """A request nobody replies to (``election``, ``heartbeat``, ``revoke``).

        ``timeout`` only sets the ``expires`` header, as Celery's
        ``broadcast`` does (1 s by default).
        """
        self._publish(pidbox_request(method, arguments, destination=destination), timeout)

    def call(
        self,
        method: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float = 1.0,
        expect: int | None = None,
        destination: Sequence[str] | None = None,
        on_reply: Callable[[Any], None] | None = None,
        settle: float | None = DEFAULT_SETTLE,
        known: Iterable[str] = (),
    ) -> Collected:
        """Broadcast a request and collect its replies.

        Collection ends as :class:`ReplyCollector` says: once ``expect``
        nodes answered (``len(destination)`` when addressed), else once
        every ``known`` node answered or replies stopped for the ``settle``
        window (``settle=None``: wait the whole ``timeout``, as Celery
        does); never later than ``timeout`` seconds after publishing.
        """
        if expect is None and destination:
            expect = len(destination)
        oid = str(uuid.uuid4())
        ticket = str(uuid.uuid4())
        queue = self._reply_queue(oid)
        channel = self.channel
        bound = queue(channel)
        bound.declare()
        collector: ReplyCollector | None = None

        def on_message(message: Any) -> None:
            assert collector is not None
            accepted = collector.feed_message(
                message.body,
                message.content_type,
                message.content_encoding,
                message.headers,
                time.time(),  # wall clock: ``expires`` headers are Unix times
            )
            if accepted and on_reply is not None:
                on_reply(collector.result.raw[-1])

        consumer = Consumer(channel, [bound], no_ack=True, on_message=on_message, accept=["json"])
        body = pidbox_request(
            method,
            arguments,
            destination=destination,
            reply_exchange=self._reply_exchange.name,
            reply_routing_key=oid,
            ticket=ticket,
        )
        try:
            with consumer:
                start = time.perf_counter()
                collector = ReplyCollector(
                    method,
                    ticket,
                    expect=expect,
                    clock=self.clock,
                    limits=self.limits,
                    published_at=time.time(),
                    timeout=timeout,
                    settle=settle,
                    known=known,
                )
                self._publish(body, timeout)
                # The collector's deadlines are wall-clock; the hard bound is
                # also kept on the monotonic clock so a clock step cannot
                # stretch the wait beyond ``timeout``.
                hard = start + timeout
                while not collector.over(time.time()):
                    remaining = min(hard - time.perf_counter(), collector.end_at() - time.time())
                    if remaining <= 0:
                        if time.perf_counter() >= hard:
                            collector.result.ended = "timeout"
                            break
                        continue
                    try:
                        self.connection.drain_events(timeout=remaining)
                    except TimeoutError:
                        continue
                    except ValueError as exc:  # see TRANSPORT_DECODE_ERROR
                        collector.result.rejected.append((TRANSPORT_DECODE_ERROR, str(exc)))
                collector.result.waited = time.perf_counter() - start
        finally:
            try:
                bound.delete()
            except Exception:  # the queue is exclusive/auto-delete anyway
                pass
        return collector.result

    # Celery's commands, spelled as Celery's client spells them.  Each takes
    # the collection options of :meth:`call` (``settle``, ``known``).

    def hello(
        self,
        from_node: str | None = None,
        revoked: Sequence[str] | None = None,
        *,
        timeout: float = 1.0,
        expect: int | None = None,
        settle: float | None = DEFAULT_SETTLE,
        known: Iterable[str] = (),
        destination: Sequence[str] | None = None,
    ) -> Collected:
        """Mingle's ``hello``: every node answers with its clock and revoked ids
        (and Celery workers merge the ``revoked`` ids sent along)."""
        return self.call(
            "hello",
            {"from_node": from_node or default_node_name(), "revoked": list(revoked or [])},
            timeout=timeout,
            expect=expect,
            settle=settle,
            known=known,
            destination=destination,
        )

    def clock_values(
        self,
        *,
        timeout: float = 1.0,
        expect: int | None = None,
        settle: float | None = DEFAULT_SETTLE,
        known: Iterable[str] = (),
        destination: Sequence[str] | None = None,
    ) -> Collected:
        return self.call(
            "clock",
            {},
            timeout=timeout,
            expect=expect,
            settle=settle,
            known=known,
            destination=destination,
        )

    def revoked_ids(
        self,
        *,
        timeout: float = 1.0,
        expect: int | None = None,
        settle: float | None = DEFAULT_SETTLE,
        known: Iterable[str] = (),
        destination: Sequence[str] | None = None,
    ) -> Collected:
        return self.call(
            "revoked",
            {},
            timeout=timeout,
            expect=expect,
            settle=settle,
            known=known,
            destination=destination,
        )

    def ping(
        self,
        *,
        timeout: float = 1.0,
        expect: int | None = None,
        settle: float | None = DEFAULT_SETTLE,
        known: Iterable[str] = (),
        destination: Sequence[str] | None = None,
    ) -> Collected:
        return self.call(
            "ping",
            {},
            timeout=timeout,
            expect=expect,
            settle=settle,
            known=known,
            destination=destination,
        )

    def revoke(
        self,
        task_ids: Sequence[str],
        *,
        terminate: bool = False,
        signal: str = "SIGTERM",
        reply: bool = False,
        timeout: float = 1.0,
        expect: int | None = None,
        settle: float | None = DEFAULT_SETTLE,
        known: Iterable[str] = (),
        destination: Sequence[str] | None = None,
    ) -> Collected | None:
        """Celery's ``control.revoke``; a cast unless ``reply`` is asked for."""
        arguments = {
            "task_id": list(task_ids) if len(task_ids) != 1 else task_ids[0],
            "terminate": terminate,
            "signal": signal,
        }
        if reply:
            return self.call(
                "revoke",
                arguments,
                timeout=timeout,
                expect=expect,
                settle=settle,
                known=known,
                destination=destination,
            )
        self.cast("revoke", arguments, destination=destination)
        return None

    def heartbeat(self) -> None:
        """Ask every node to send a ``worker-heartbeat`` now (what monitors do)."""
        self.cast("heartbeat", {})

    def election(self, id: str, topic: str, action: Any = None) -> None:
        """``celery control election``: a cast with ``{id, topic, action}``."""
        self.cast("election", {"id": id, "topic": topic, "action": action})


@dataclass(frozen=True)
class StreamNotice:
    """Something the operator should hear about a stream: ``lost`` (with the
    reason and the delay before the next attempt) or ``reconnected`` (with
    how long the stream was down)."""

    kind: str
    message: str
    seconds: float = 0.0


class EventStream:
    """Consumes the event exchange, as Celery's ``EventReceiver`` does.

    The queue is ``<event_queue_prefix>.<uuid>``: exclusive, auto-deleted,
    with Celery's message TTL and expiry, bound with ``routing_key`` (``#``
    for everything; on fanout transports the key is ignored).  Bodies are
    decoded as JSON only; batches are expanded.  When the connection drops
    the stream reconnects with exponential backoff, redeclares its queue and
    reports both through ``on_notice``; events published while it was down
    are lost (the old queue died with its connection), which it says.

    Use :meth:`open` before asking workers for anything (so that their
    answers land in the queue), then :meth:`poll` repeatedly.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        routing_key: str = "#",
        limits: Limits | None = None,
        on_notice: Callable[[StreamNotice], None] | None = None,
        backoff_start: float = 0.2,
        backoff_max: float = 5.0,
        connection: Connection | None = None,
        max_batch: int = 1000,
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.routing_key = routing_key
        self.max_batch = max_batch
        self.limits = limits or Limits()
        self.on_notice = on_notice
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.connection: Connection | None = connection
        self.node_id = str(uuid.uuid4())
        self.messages = 0
        self.events = 0
        self.rejected: list[tuple[str, str]] = []
        self.reconnects = 0
        self._pending: list[Any] = []
        self._down = False
        self._lost_at = 0.0
        self._interval = backoff_start
        self._consumer: Consumer | None = None
        self._channel: Any = None

    # -- set-up --------------------------------------------------------------

    @property
    def queue_name(self) -> str:
        return self.names.event_queue(self.node_id)

    def _queue(self) -> Queue:
        return Queue(
            self.queue_name,
            exchange=event_exchange(self.names, self.settings.transport),
            routing_key=self.routing_key,
            durable=False,
            exclusive=True,
            auto_delete=True,
            message_ttl=self.names.event_queue_ttl,
            expires=self.names.event_queue_expires,
        )

    def _on_message(self, message: Any) -> None:
        self.messages += 1
        try:
            items = decode_events(
                message.body, message.content_type, message.content_encoding, self.limits
            )
        except Rejected as exc:
            self.rejected.append((exc.reason, exc.detail))
            return
        self.events += len(items)
        self._pending.extend(items)

    def _attach(self) -> None:
        assert self.connection is not None
        self._channel = self.connection.channel()
        self._consumer = Consumer(
            self._channel,
            [self._queue()],
            no_ack=True,
            on_message=self._on_message,
            accept=["json"],
        )
        self._consumer.consume()
        if self.settings.transport in FANOUT_EVENT_TRANSPORTS:
            # kombu subscribes to an emulated fanout exchange (Redis PUB/SUB)
            # only at the first poll: poll once now, so that events answering
            # a request published right after open() are not lost.
            try:
                self.connection.drain_events(timeout=0.05)
            except TimeoutError:
                pass

    def open(self) -> EventStream:
        """Connect (if not given a connection), declare and bind the queue, consume."""
        if self.connection is None:
            self.connection = self.settings.connection()
        self.connection.ensure_connection(
            max_retries=self.settings.failover_retries, timeout=self.settings.connect_timeout
        )
        self._attach()
        return self

    def close(self) -> None:
        for closer in (
            (lambda: self._consumer.cancel()) if self._consumer else None,
            (lambda: self._channel.close()) if self._channel else None,
            (lambda: self.connection.release()) if self.connection else None,
        ):
            if closer is None:
                continue
            try:
                closer()
            except Exception:  # best effort: the connection may be gone already
                pass
        self._consumer = None
        self._channel = None

    def __enter__(self) -> EventStream:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- consuming -----------------------------------------------------------

    def _errors(self) -> tuple[type[BaseException], ...]:
        assert self.connection is not None
        return (
            tuple(self.connection.connection_errors)
            + tuple(self.connection.channel_errors)
            + (OSError, ConnectionError)
        )

    def _reconnect(self, exc: BaseException | None, deadline: float | None) -> bool:
        """Reconnect with backoff until it works or ``deadline`` (monotonic) passes.

        Returns False at the deadline; the stream stays down and the next
        :meth:`poll` goes on trying (without announcing the loss again).
        """
        if not self._down:
            self._down = True
            self._lost_at = time.monotonic()
            self._interval = self.backoff_start
            reason = (str(exc).strip() or type(exc).__name__) if exc else "unknown reason"
            if self.settings.url in reason:
                reason = reason.replace(self.settings.url, self.settings.masked_url)
            self._notice(
                StreamNotice(
                    "lost",
                    f"connection to broker {self.settings.masked_url} lost ({reason}); "
                    f"reconnecting in {self._interval:.1f} s",
                    self._interval,
                )
            )
            self._release()
        while True:
            wait = self._interval
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            try:
                self.connection = self.settings.connection()
                self.connection.ensure_connection(
                    max_retries=self.settings.failover_retries,
                    timeout=self.settings.connect_timeout,
                )
                self._attach()
            except Exception as again:  # still down: back off and try again
                self._release()
                self._interval = min(self._interval * 2, self.backoff_max)
                logger.debug("reconnect failed (%r); next attempt in %.1f s", again, self._interval)
                continue
            self._down = False
            self.reconnects += 1
            down = time.monotonic() - self._lost_at
            self._notice(
                StreamNotice(
                    "reconnected",
                    f"reconnected to broker {self.settings.masked_url} after {down:.1f} s "
                    "(events published meanwhile were not received)",
                    down,
                )
            )
            return True

    def _release(self) -> None:
        self._consumer = None
        self._channel = None
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # a dead connection may fail to close; it is dropped anyway
                pass

    def _notice(self, notice: StreamNotice) -> None:
        if self.on_notice is not None:
            self.on_notice(notice)

    def poll(self, timeout: float, deadline: float | None = None) -> list[Any]:
        """Events that arrived within ``timeout`` seconds (possibly none).

        ``deadline`` (a ``time.monotonic()`` value) bounds reconnection
        attempts; without it the stream retries forever.
        """
        if self._pending:
            out, self._pending = self._pending, []
            return out
        if self._down:
            if not self._reconnect(None, deadline):
                return []
        if self.connection is None or self._consumer is None:
            raise RuntimeError("EventStream.poll() before open()")
        wait = max(timeout, 0.0)
        # One blocking wait, then whatever else is already there (up to
        # ``max_batch`` events): amqp hands over one message per drain, and
        # returning them in batches keeps the caller's per-poll work (output
        # flushes, progress) off the per-event path.
        while True:
            before = len(self._pending)
            try:
                self.connection.drain_events(timeout=wait)
            except TimeoutError:
                break
            except ValueError as exc:  # see TRANSPORT_DECODE_ERROR
                self.rejected.append((TRANSPORT_DECODE_ERROR, str(exc)))
            except self._errors() as exc:
                self._reconnect(exc, deadline)
                break
            if len(self._pending) >= self.max_batch or len(self._pending) == before:
                break
            wait = 0.0
        out, self._pending = self._pending, []
        return out

    def iter_events(self, *, duration: float | None = None, idle: float = 0.5) -> Iterator[Any]:
        """Every event for ``duration`` seconds (forever when None)."""
        deadline = None if duration is None else time.monotonic() + duration
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                timeout = min(idle, remaining)
            else:
                timeout = idle
            yield from self.poll(timeout, deadline)
