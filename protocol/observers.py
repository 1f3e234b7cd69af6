"""Observers of the event stream (sans-IO): event decoding and stamping,
elections seen from outside, who stands in one.

* :func:`decode_events` (JSON-only decoding of one event message,
  ``task.multi`` batches expanded) and :func:`prepare_event` (the stamps
  Celery's ``EventReceiver`` adds before State);
* :class:`ElectionWatch`: an election seen through its events (who stood,
  who acknowledged, what each participant decided by its own rule);
* :func:`election_participants`: which live nodes stand in an election;
  :class:`NodeSurvey` (finding them from their heartbeats),
  :func:`plan_election` and :func:`standing_hazard` (the one home of the
  rule that refuses an election a stock Celery worker would die in, used by
  ``wkctl elect`` and the conformance kit alike), :func:`election_problems`
  (what went wrong, in words).

Time is an input (``now``); nothing here touches a broker, a clock or a
thread: :class:`~wkctl.protocol.client.EventStream` and
:mod:`wkctl.protocol.elect` are the adapters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .clock import LamportClock
from .election import (
    Arrival,
    CeleryRule,
    ElectRequest,
    Replayed,
    SpecRule,
    election_hazard,
    mixed_rules_warning,
    order_key,
    pick_winner,
)
from .vocab import (
    ELECT_ACK_EVENT,
    ELECT_EVENT,
    GOSSIP_TRANSPORTS,
    HEARTBEAT_TYPES,
    PeerKind,
    peer_kind,
)
from .wire import Limits, decode_body, expand_batch

__all__ = [
    "ElectionOutcome",
    "ElectionPlan",
    "ElectionWatch",
    "NodeSurvey",
    "decode_events",
    "EventValidator",
    "election_participants",
    "election_problems",
    "plan_election",
    "prepare_event",
    "standing_hazard",
]


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
        #: participants whose request was sighted ahead of the ordered
        #: stream (:meth:`sight`)
        self.sighted: set[str] = set()
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
            arrival = self._request(event)
        elif type_ == ELECT_ACK_EVENT:
            arrival = self._ack(event)
        else:
            return False
        if arrival is None:
            return False
        self.arrivals.append(arrival)
        self.times.append(now)
        for host, rule in self.rules.items():
            if rule.feed(arrival) is not None:
                self.undecided.discard(host)
        return self._progress(now)

    def sight(self, event: Any, now: float) -> None:
        """A ``worker-elect`` of this election seen ahead of the ordered
        stream (an express queue that floods of acks cannot delay).

        It counts toward fixing the winner at once: the spec's rule needs
        only the requests, not their order.  The replays, which do depend on
        the order, take the same request when :meth:`feed` gets it."""
        if not isinstance(event, dict) or event.get("id") != self.id:
            return
        request = ElectRequest.from_event(event) if event.get("type") == ELECT_EVENT else None
        if request is None:
            return
        self.sighted.add(request.hostname)
        self._progress(now)

    def _request(self, event: dict[str, Any]) -> Arrival | None:
        """A ``worker-elect`` of this election as an arrival (None: ignored)."""
        request = ElectRequest.from_event(event)
        if request is None:
            self.ignored += 1
            return None
        if request.hostname not in self.requests:
            if len(self.requests) >= self.max_candidates:
                self.ignored += 1
                return None
            self.requests[request.hostname] = request
            self._seen_alive(request.hostname)
            if self.expected and request.hostname not in self.rules:
                self._rule(request.hostname)  # stood unexpectedly: its rule, from the start
                self.undecided.add(request.hostname)
        return Arrival(request.hostname, request)

    def _ack(self, event: dict[str, Any]) -> Arrival | None:
        """A ``worker-elect-ack`` of this election as an arrival (None: ignored)."""
        hostname = event.get("hostname")
        if not isinstance(hostname, str) or not hostname:
            self.ignored += 1
            return None
        if len(self.arrivals) >= self.max_candidates * (self.max_candidates + 1):
            self.ignored += 1
            return None
        self.acks += 1
        self.acks_by[hostname] = self.acks_by.get(hostname, 0) + 1
        return Arrival(hostname)

    def _progress(self, now: float) -> bool:
        """Record when the winner got fixed, every participant decided, every
        ack arrived; True at the arrival that completed the election."""
        if (
            self.fixed_at is None
            and self.expected
            and self.expected <= (self.requests.keys() | self.sighted)
        ):
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


def standing_hazard(
    kinds: Mapping[str, str | None],
    holding: Iterable[str] = (),
    releases: Mapping[str, str | None] | None = None,
) -> str | None:
    """Why holding an election among ``kinds`` can kill a stock Celery worker
    (:func:`~wkctl.protocol.election.election_hazard`, DEFECT-1), or ``None``.

    ``holding`` names participants known to hold another participant's
    request already (they acknowledged it): such a worker's heap has two
    requests whenever it decides, so the defect cannot fire for it.  A
    participant whose kind is unknown (``None``) is assumed to be stock
    Celery: refusing is the safe side.
    """
    safe = set(holding)
    known = {h: ("celery" if k is None else k) for h, k in kinds.items()}
    if all(k != "celery" or h in safe for h, k in known.items()):
        return None
    return election_hazard(known, releases)


@dataclass(frozen=True)
class ElectionPlan:
    """Who stands in an election about to be held, and what can go wrong."""

    #: participant -> peer kind
    participants: dict[str, PeerKind]
    #: peer kind -> how many live nodes of that kind were found
    counts: dict[str, int]
    #: why the election can kill a stock Celery worker (refused without force)
    hazard: str | None
    #: why participants following different rules may disagree (a warning)
    mixed: str | None

    def describe(self, found: int, elapsed: float) -> str:
        """One log line: what was found and who will stand."""
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
        return (
            f"found {found} node(s) in {elapsed * 1000:.0f} ms ({kinds}); "
            f"{len(self.participants)} will stand"
        )


def plan_election(heartbeats: Mapping[str, Mapping[str, Any]], transport: str) -> ElectionPlan:
    """The plan of an election among the live nodes (``hostname -> heartbeat``)."""
    kinds = election_participants(heartbeats, transport)
    counts: dict[str, int] = {}
    for hb in heartbeats.values():
        kind = peer_kind(hb)
        counts[kind] = counts.get(kind, 0) + 1
    releases = {h: hb.get("sw_ver") for h, hb in heartbeats.items() if h in kinds}
    return ElectionPlan(
        kinds, counts, standing_hazard(kinds, releases=releases), mixed_rules_warning(kinds)
    )


class NodeSurvey:
    """Finding the live nodes from their heartbeats (sans-IO).

    The asker requested a heartbeat from every node and pinged them at
    ``started``; feed it the events that arrive and the ping's repliers.
    Listening ends (:meth:`end_at`) 20 ms after every ping replier sent its
    heartbeat (the ping already waited for the nodes that answer),
    ``settle`` seconds after the last new one when nobody answered the
    ping, or after ``window``.
    """

    #: quiet time once every ping replier has sent its heartbeat
    GRACE = 0.02

    def __init__(self, started: float, window: float, settle: float = 0.1) -> None:
        self.started = started
        self.window = window
        self.settle = settle
        self.pinged: frozenset[str] = frozenset()
        #: hostname -> its latest heartbeat
        self.nodes: dict[str, dict[str, Any]] = {}
        self.last_new = started

    def end_at(self) -> float:
        end = self.started + self.window
        if self.pinged and self.pinged <= self.nodes.keys():
            end = min(end, self.last_new + self.GRACE)
        elif not self.pinged and self.nodes:
            end = min(end, self.last_new + self.settle)
        return end

    def feed(self, event: Any, now: float) -> None:
        """Take one decoded event: heartbeats add (or refresh) a node,
        ``worker-offline`` removes it."""
        if not isinstance(event, dict) or not isinstance(event.get("hostname"), str):
            return
        host: str = event["hostname"]
        type_ = event.get("type")
        if type_ == "worker-offline":
            self.nodes.pop(host, None)
        elif type_ in HEARTBEAT_TYPES:
            if host not in self.nodes:
                self.last_new = now
            self.nodes[host] = event

    def result(self) -> dict[str, dict[str, Any]]:
        """``{hostname: heartbeat}``; a ping replier whose heartbeat did not
        come is listed with no fields (kind "other")."""
        nodes = dict(self.nodes)
        for host in self.pinged:
            nodes.setdefault(host, {"hostname": host})
        return nodes


def election_problems(
    outcome: ElectionOutcome, dead: Sequence[str], election_id: str, timeout: float
) -> list[str]:
    """What went wrong in an election, one sentence each (empty: all agreed
    and every participant is alive)."""
    problems = []
    sides = outcome.sides
    if dead:
        problems.append(
            f"participant(s) no longer answer ping after the election: {', '.join(dead)}"
            + (" (crashed deciding, spec DEFECT-1)" if "crashed" in sides else "")
        )
    if len(sides) > 1:
        runners = outcome.runners
        problems.append(
            "participants disagree: "
            + "; ".join(f"{', '.join(hosts)} picked {who}" for who, hosts in sorted(sides.items()))
            + (
                f" (the action runs on {len(runners)} node(s): {', '.join(runners)})"
                if runners
                else " (no participant picked itself: the action runs nowhere)"
            )
        )
    if outcome.winner is None and not problems:
        if not outcome.candidates:
            problems.append(
                f"no node stood in election {election_id!r} within {timeout:g} s "
                "(no worker-elect event: are the workers running with gossip, on amqp or redis?)"
            )
        elif outcome.undecided:
            problems.append(
                f"no winner for election {election_id!r} within {timeout:g} s: "
                f"participant(s) that did not decide: {', '.join(outcome.undecided)}"
            )
        else:
            problems.append(
                f"no winner for election {election_id!r} within {timeout:g} s: candidate(s) "
                f"that did not acknowledge every request: {', '.join(outcome.not_acked)}"
            )
    return problems


class EventValidator:
    """Judges every event of a stream against the schemas, on a budget.

    The fast path says valid or not for every event; the detailed (slow)
    pass explains only the first ``detailed`` invalid events of each batch
    (:meth:`new_batch` resets the budget), so one hostile message of
    millions of invalid items cannot stall the stream.
    """

    #: Invalid events of one batch explained in detail; the rest are counted.
    DETAILED_PER_BATCH = 100
    #: The issue given for an invalid event past the budget.
    SKIPPED = "invalid (details skipped: too many invalid events at once)"

    def __init__(self, detailed: int = DETAILED_PER_BATCH, kind: str = "event") -> None:
        from . import validation  # the schema compiler loads on first use

        self._is_valid = validation.is_valid
        self._validate = validation.validate
        self.detailed = detailed
        self.kind = kind
        self.left = detailed

    def new_batch(self) -> None:
        self.left = self.detailed

    def issues(self, body: Any) -> list[str]:
        """``[]`` for a valid event, else its issues (at least one)."""
        if self._is_valid(body, self.kind):
            return []
        if self.left <= 0:
            return [self.SKIPPED]
        self.left -= 1
        return [str(issue) for issue in self._validate(body, self.kind)] or ["invalid"]
