"""Elections: the total order, and one node's bookkeeping of each election.

On the wire an election is Celery's: the ``election`` control command
``{id, topic, action}`` reaches every worker, each one publishes a
``worker-elect`` event ``{id, topic, action, cver: 1}`` stamped with its
clock, and every node acknowledges every ``worker-elect`` it sees with a
``worker-elect-ack`` ``{id}``.  The winner is the request with the lowest
``(clock, "hostname.pid")``.

Celery's own bookkeeping (``celery.worker.consumer.gossip.Gossip``) has
defects that this module fixes (spec: election section):

* ``LamportClock.sort_heap`` indexes ``h[1]``, so a worker that decides
  holding one request raises ``IndexError`` and dies (alone: always; one
  of two: often); :func:`pick_winner` handles one request.
* ``sort_heap``'s tie loop only looks at the first run of equal clocks in
  heap layout; it still returns the heap's root, but only because
  ``heapq`` keeps the lowest tuple there: :func:`pick_winner` states the
  total order itself, for any number of requests and identical entries.
* acks are counted per message, from ``N-1`` peers, so with three workers
  a node decides after two acks even if it has not yet seen every request;
  here a decision waits for every expected ``worker-elect`` (the nodes
  known alive when the election started here, this node included) and is
  taken as soon as the last one arrives: acks carry only the election id,
  so they cannot change the winner ([ELECT-5]); they are still sent
  ([ELECT-2]) and counted per distinct node, for observers.

:class:`CeleryRule` and :class:`SpecRule` replay, for an observer, what a
stock Celery worker and a conforming node decide on a given order of
arrivals (``wkctl elect`` reports every participant's decision).
* an election whose participants died waits forever and leaks; here it
  is decided among the requests received after ``timeout`` seconds and its
  state is discarded.

Sans-IO: inputs are decoded events and ``now``; outputs are
:class:`Decision` values and the ids of requests to acknowledge.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .clock import parse_clock

__all__ = [
    "DecisionReason",
    "DEFAULT_ELECTION_TIMEOUT",
    "Decision",
    "ElectRequest",
    "Election",
    "Elections",
    "Arrival",
    "CeleryRule",
    "Replayed",
    "SpecRule",
    "election_hazard",
    "mixed_rules_warning",
    "order_key",
    "pick_winner",
    "replay_celery",
    "replay_spec",
]

#: Why an election was decided: every expected request arrived, or time ran out.
DecisionReason = Literal["complete", "timeout"]

DEFAULT_ELECTION_TIMEOUT = 10.0
#: At most this many elections are tracked at once (a forger cannot make a
#: node hold unbounded state by sending worker-elect events with new ids).
MAX_ACTIVE_ELECTIONS = 1024
#: Ids of finished elections remembered, so late duplicates are not
#: mistaken for a new election.
MAX_FINISHED_ELECTIONS = 4096


@dataclass(frozen=True)
class ElectRequest:
    """One ``worker-elect`` event, reduced to what the decision needs."""

    id: str
    clock: int
    hostname: str
    pid: int | str
    topic: str
    #: any JSON value; not part of equality/hash (a dict is unhashable)
    action: Any = field(default=None, compare=False)

    @property
    def node_id(self) -> str:
        """Celery's participant id, ``"hostname.pid"`` (what it logs as leader)."""
        return f"{self.hostname}.{self.pid}"

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> ElectRequest | None:
        """Build from a decoded ``worker-elect`` event; ``None`` if unusable."""
        id_ = event.get("id")
        hostname = event.get("hostname")
        topic = event.get("topic")
        clock = parse_clock(event.get("clock"))
        pid = event.get("pid")
        if not isinstance(id_, str) or not isinstance(hostname, str) or not hostname:
            return None
        if not isinstance(topic, str) or clock is None:
            return None
        if isinstance(pid, bool) or not isinstance(pid, (int, str)):
            return None
        return cls(id_, clock, hostname, pid, topic, event.get("action"))


def order_key(request: ElectRequest) -> tuple[int, str]:
    """The election's total order: clock numerically, then ``hostname.pid``."""
    return (request.clock, request.node_id)


def pick_winner(requests: Iterable[ElectRequest]) -> ElectRequest:
    """The lowest request in the total order.

    Works for one request, for any number of equal clocks and for identical
    entries (a duplicate delivery), where Celery's ``sort_heap`` fails.
    Raises ``ValueError`` only for an empty iterable.
    """
    return min(requests, key=order_key)


@dataclass(frozen=True)
class Decision:
    """The outcome of one election at this node."""

    id: str
    winner: ElectRequest
    won: bool
    reason: DecisionReason  # "complete" (every expected request) or "timeout"
    participants: tuple[str, ...]  # hostnames whose requests were counted
    missing: tuple[str, ...] = ()  # expected hostnames never heard from
    requests: tuple[ElectRequest, ...] = ()  # every request counted, in the total order

    @property
    def topic(self) -> str:
        return self.winner.topic

    @property
    def action(self) -> Any:
        return self.winner.action


@dataclass
class Election:
    """The state of one election at this node; discarded once decided."""

    id: str
    started: float
    expected: frozenset[str]
    requests: dict[str, ElectRequest] = field(default_factory=dict)
    ackers: set[str] = field(default_factory=set)

    def complete(self) -> bool:
        """Every expected request is in: the winner is fixed ([ELECT-5])."""
        return self.expected <= self.requests.keys()


class Elections:
    """All elections one node takes part in.

    ``me`` is this node's hostname.  ``alive`` arguments are the hostnames
    gossip currently counts alive; the node's own name is always added.
    """

    def __init__(self, me: str, timeout: float = DEFAULT_ELECTION_TIMEOUT) -> None:
        self.me = me
        self.timeout = timeout
        self.active: OrderedDict[str, Election] = OrderedDict()
        #: id -> hostnames already acknowledged, for finished elections
        self.finished: OrderedDict[str, set[str]] = OrderedDict()
        self._acked: dict[str, set[str]] = {}

    def _election(self, id_: str, now: float, alive: Iterable[str]) -> Election | None:
        if id_ in self.finished:
            return None
        election = self.active.get(id_)
        if election is None:
            election = Election(id_, now, frozenset(alive) | {self.me})
            self.active[id_] = election
            while len(self.active) > MAX_ACTIVE_ELECTIONS:
                old_id, _ = self.active.popitem(last=False)
                self._finish(old_id)
        return election

    def _finish(self, id_: str) -> None:
        self.active.pop(id_, None)
        self.finished[id_] = self._acked.pop(id_, set())
        while len(self.finished) > MAX_FINISHED_ELECTIONS:
            self.finished.popitem(last=False)

    def start(self, id_: str, now: float, alive: Iterable[str]) -> None:
        """The ``election`` command reached us: make sure the election exists
        (a peer's ``worker-elect`` may have arrived first)."""
        self._election(id_, now, alive)

    def record_own(self, request: ElectRequest, now: float, alive: Iterable[str]) -> None:
        """Count our own request at once, without waiting for its echo."""
        election = self._election(request.id, now, alive)
        if election is not None:
            election.requests.setdefault(request.hostname, request)

    def on_request(
        self, request: ElectRequest, now: float, alive: Iterable[str]
    ) -> tuple[bool, Decision | None]:
        """A ``worker-elect`` arrived.

        Returns ``(ack, decision)``: whether to send ``worker-elect-ack``
        (exactly once per election id and sender) and the decision if this
        request completed the election.
        """
        acked = self.finished.get(request.id)
        if acked is None:
            acked = self._acked.setdefault(request.id, set())
        ack = request.hostname not in acked
        acked.add(request.hostname)
        election = self._election(request.id, now, alive)
        if election is None:
            return ack, None
        # The first request of a sender counts; a duplicate delivery or a
        # forged second request cannot change the outcome.
        election.requests.setdefault(request.hostname, request)
        return ack, self._maybe_decide(election)

    def on_ack(self, id_: str, hostname: str, now: float, alive: Iterable[str]) -> Decision | None:
        """A ``worker-elect-ack`` arrived: count its sender once."""
        election = self._election(id_, now, alive)
        if election is None:
            return None
        election.ackers.add(hostname)
        return self._maybe_decide(election)

    def _maybe_decide(self, election: Election) -> Decision | None:
        if not election.complete():
            return None
        return self._decide(election, "complete")

    def _decide(self, election: Election, reason: DecisionReason) -> Decision | None:
        self._finish(election.id)
        if not election.requests:
            return None
        winner = pick_winner(election.requests.values())
        return Decision(
            id=election.id,
            winner=winner,
            won=winner.hostname == self.me,
            reason=reason,
            participants=tuple(sorted(election.requests)),
            missing=tuple(sorted(election.expected - election.requests.keys())),
            requests=tuple(sorted(election.requests.values(), key=order_key)),
        )

    def forget(self, hostname: str) -> list[Decision]:
        """A peer left or was lost: stop expecting it in every election, and
        return the decisions of those that are now complete.

        Its request, if it was published, reached every queue before its
        ``worker-offline`` (or before it died), so every survivor decides on
        the same requests; this only saves waiting for the timeout.
        """
        out: list[Decision] = []
        for election in list(self.active.values()):
            if hostname in election.expected and hostname not in election.requests:
                election.expected = election.expected - {hostname}
                election.ackers.discard(hostname)
                if election.complete():
                    decision = self._decide(election, "complete")
                    if decision is not None:
                        out.append(decision)
        return out

    def expire(self, now: float) -> list[tuple[str, Decision | None]]:
        """Decide every election older than ``timeout`` among the requests
        received, and discard it.  Returns ``(id, decision)`` pairs; the
        decision is ``None`` when no request at all arrived."""
        out: list[tuple[str, Decision | None]] = []
        for election in list(self.active.values()):
            if now - election.started >= self.timeout:
                out.append((election.id, self._decide(election, "timeout")))
        return out

    def next_deadline(self) -> float | None:
        if not self.active:
            return None
        return min(e.started for e in self.active.values()) + self.timeout


# -- replaying what each participant decided ---------------------------------


@dataclass(frozen=True)
class Arrival:
    """One election event in the order it reached a queue: a request
    (``worker-elect``) when ``request`` is set, else an acknowledgement."""

    hostname: str
    request: ElectRequest | None = None


@dataclass(frozen=True)
class Replayed:
    """What one participant decided, replayed from an order of arrivals.

    ``winner`` is ``None`` while undecided (and when the node crashed);
    ``at`` is the index of the arrival that decided it (or crashed it);
    ``counted`` the requests its decision was taken on.
    """

    node: str
    rule: str  # "spec" or "celery"
    winner: ElectRequest | None = None
    crashed: bool = False
    at: int | None = None
    counted: int = 0

    @property
    def decided(self) -> bool:
        return self.at is not None


class CeleryRule:
    """Celery's ``Gossip.on_elect`` / ``on_elect_ack`` for one worker, fed
    arrivals one at a time (:func:`replay_celery` runs it over an order).

    Every request is pushed on the worker's heap as it arrives; an ack is
    counted per message (DEFECT-2), and only once the worker ran its own
    ``election`` command (acks it consumed before are dropped as "not for
    us"): ``counts_from`` is the index of the first arrival it consumed
    after that.  Every election event is caused by the one ``election``
    command, which reaches every pidbox queue before any of them, so by
    default every ack counts.  At the ack that brings the count to
    ``alive_peers`` (the peers its events State holds alive, itself
    excluded) it decides on the heap as it is.
    ``LamportClock.sort_heap`` returns the heap's root, the lowest
    ``(clock, "hostname.pid")``, when the heap holds two requests or more
    (DEFECT-4's tie loop never picks another entry than one equal to the
    root), and raises ``IndexError`` on fewer: the worker dies (DEFECT-1).
    """

    rule = "celery"

    def __init__(self, me: str, alive_peers: int, counts_from: int = 0) -> None:
        self.me = me
        self.alive_peers = alive_peers
        self.counts_from = counts_from
        self.heap: list[ElectRequest] = []
        self.replies = 0
        self.index = 0
        self.result: Replayed | None = None

    def feed(self, arrival: Arrival) -> Replayed | None:
        """Take the next arrival; the decision once taken (then final)."""
        me = self.me
        i = self.index
        self.index += 1
        if self.result is not None:
            return self.result
        if arrival.request is not None:
            self.heap.append(arrival.request)
            return None
        if i < self.counts_from:
            return None
        self.replies += 1
        if self.replies < self.alive_peers:
            return None
        if len(self.heap) < 2:
            self.result = Replayed(me, self.rule, None, crashed=True, at=i, counted=len(self.heap))
        else:
            self.result = Replayed(
                me, self.rule, pick_winner(self.heap), at=i, counted=len(self.heap)
            )
        return self.result


class SpecRule:
    """A conforming node ([ELECT-5]), fed arrivals one at a time: it decides
    as soon as it holds the request of every expected participant (itself
    included), on every request received by then ([ELECT-3])."""

    rule = "spec"

    def __init__(self, me: str, expected: Iterable[str]) -> None:
        self.me = me
        want = frozenset(expected) | {me}
        self.requests: dict[str, ElectRequest] = {}
        self.no_request = set(want)
        self.index = 0
        self.result: Replayed | None = None

    def feed(self, arrival: Arrival) -> Replayed | None:
        """Take the next arrival; the decision once taken (then final)."""
        i = self.index
        self.index += 1
        if self.result is not None:
            return self.result
        if arrival.request is not None:
            self.requests.setdefault(arrival.hostname, arrival.request)
            self.no_request.discard(arrival.hostname)
        if not self.no_request:
            winner = pick_winner(self.requests.values())
            self.result = Replayed(self.me, self.rule, winner, at=i, counted=len(self.requests))
        return self.result


def replay_celery(
    me: str, alive_peers: int, order: Iterable[Arrival], counts_from: int = 0
) -> Replayed:
    """What stock Celery worker ``me`` decided on ``order`` (:class:`CeleryRule`)."""
    rule = CeleryRule(me, alive_peers, counts_from)
    for arrival in order:
        if rule.feed(arrival) is not None:
            break
    return rule.result or Replayed(me, rule.rule, counted=len(rule.heap))


def replay_spec(me: str, expected: Iterable[str], order: Iterable[Arrival]) -> Replayed:
    """What conforming node ``me`` decided on ``order`` (:class:`SpecRule`)."""
    rule = SpecRule(me, expected)
    for arrival in order:
        if rule.feed(arrival) is not None:
            break
    return rule.result or Replayed(me, rule.rule, counted=len(rule.requests))


#: The oldest stock Celery release measured safe in elections of three or
#: more participants (5.4 and 5.7: 0 crashes in 160 elections of 3 and 5
#: workers); a 5.1.2 worker died in 1 of 12 three-worker elections (spec
#: DEFECT-1), and the releases between were not measured enough to tell.
SAFE_FROM_THREE = (5, 4)


def _release(version: str | None) -> tuple[int, ...] | None:
    """``"5.1.2"`` -> ``(5, 1, 2)``; ``None`` for anything else."""
    if not isinstance(version, str):
        return None
    parts = version.split(".")[:3]
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        return None


def election_hazard(
    kinds: Mapping[str, str], releases: Mapping[str, str | None] | None = None
) -> str | None:
    """Why an election among these participants can kill a Celery worker,
    or ``None`` when no known defect can.

    ``kinds`` maps each participant to its peer kind
    (:func:`wkctl.protocol.vocab.peer_kind`), ``releases`` a participant to
    the Celery release it announces (``sw_ver``), when known.  A stock
    Celery worker decides at its ``N-1``-th ack message whatever its heap
    holds, and dies when the heap holds fewer than two requests (DEFECT-1):
    certain when it is alone, frequent with two participants (spec DEFECT-1
    has the measured rates).  From three participants on, acks must reach it
    before a second request: never seen with 5.4 and 5.7 in 160 elections,
    seen with 5.1.2, so a stock worker older than :data:`SAFE_FROM_THREE`
    is a hazard at any size.  Hardened workers and wkctl nodes follow the
    spec and cannot crash this way.
    """
    stock = sorted(h for h, k in kinds.items() if k == "celery")
    if not stock:
        return None
    names = ", ".join(stock)
    if len(kinds) == 1:
        return (
            f"the stock Celery worker {names} would be alone in the election, and a Celery "
            "worker alone in an election always dies (IndexError in LamportClock.sort_heap, "
            "spec DEFECT-1)"
        )
    if len(kinds) == 2:
        return (
            f"the election would have two participants, and a stock Celery worker among two "
            f"({names}) dies whenever the first ack reaches it before the other request "
            "(IndexError in LamportClock.sort_heap; measured: in up to 1 election in 4, often "
            "killing both; spec DEFECT-1)"
        )
    old = sorted(
        f"{h} ({(releases or {}).get(h)})"
        for h in stock
        if (release := _release((releases or {}).get(h))) is not None and release < SAFE_FROM_THREE
    )
    if old:
        return (
            f"stock Celery workers older than 5.4 stand in it ({', '.join(old)}), and such a "
            "worker can die even among three participants when acks reach it before a second "
            "request (IndexError in LamportClock.sort_heap; measured: a 5.1.2 worker in 1 of 12 "
            "three-worker elections; spec DEFECT-1)"
        )
    return None


def mixed_rules_warning(kinds: Mapping[str, str]) -> str | None:
    """Why stock Celery workers and conforming nodes in one election may both
    run the action, or ``None`` when all follow one rule.

    A stock worker decides at its ``N-1``-th ack message on the requests it
    has (DEFECT-2); a conforming node waits for every request.  When the
    lowest request arrives late they pick different winners (measured in
    spec DEFECT-2).  Not a crash, so not refused: ``wkctl elect`` reports
    each side.
    """
    stock = sorted(h for h, k in kinds.items() if k == "celery")
    conforming = sorted(h for h, k in kinds.items() if k != "celery")
    if not stock or not conforming:
        return None
    return (
        f"stock Celery worker(s) ({', '.join(stock)}) decide on the requests that reached them "
        f"after {len(kinds) - 1} ack messages (spec DEFECT-2) while the {len(conforming)} other "
        "participant(s) wait for every request: they may pick different winners, and the "
        "action then runs twice or not at all"
    )
