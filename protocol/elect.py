"""Holding an election from outside, over a :class:`~wkctl.protocol.client.Client`
and an :class:`~wkctl.protocol.client.EventStream` (the adapter of the
sans-IO :mod:`.observers`).

``celery control election`` fires the ``election`` command and returns; the
outcome is only in the workers' logs.  :func:`survey` first finds the
participants (a ``heartbeat`` request: every node answers with a heartbeat
within milliseconds, which also says what it is; and a ``ping`` that ends
once the nodes known alive answered), :func:`~.observers.plan_election`
says who stands and whether a known Celery defect can turn the election
into a crash, :func:`hold` sends the very same request and watches the
``worker-elect`` / ``worker-elect-ack`` events (the stream's queue is bound
before anything is published, so no event is missed), and
:func:`check_alive` asks every participant for a ``ping`` afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .client import Client, EventStream
from .observers import ElectionWatch, NodeSurvey
from .replies import Collected
from .vocab import ELECT_EVENT
from .wire import event_routing_key

__all__ = ["EXPRESS_KEY", "Survey", "check_alive", "hold", "survey"]

#: The ``express`` routing key of an election's :class:`EventStream`: the N
#: requests fix the winner, and must not queue behind the N x N acks.
EXPRESS_KEY = event_routing_key(ELECT_EVENT)


@dataclass
class Survey:
    """The live nodes found before an election."""

    #: hostname -> its heartbeat (no fields when only its ping reply came)
    nodes: dict[str, dict[str, Any]]
    #: the ping's replies (callers remember who answered)
    pinged: Collected
    #: seconds the survey took
    elapsed: float


def survey(
    client: Client,
    stream: EventStream,
    window: float,
    *,
    settle: float = 0.1,
    known: Iterable[str] = (),
) -> Survey:
    """Find the live nodes and what they are, in milliseconds.

    Asks every node for a heartbeat and pings them (the ping ends as soon
    as the ``known`` alive nodes answered, else when replies settle), then
    listens as :class:`~wkctl.protocol.observers.NodeSurvey` says, at most
    ``window`` seconds.  ``stream`` must be open (routing key ``worker.#``
    at least) before the call, so that no heartbeat is lost.
    """
    started = time.perf_counter()
    client.heartbeat()
    start = time.monotonic()
    pinged = client.call("ping", {}, timeout=window, known=known)
    state = NodeSurvey(start, window, settle)
    state.pinged = frozenset(pinged.replies)
    while True:
        end = state.end_at()
        now = time.monotonic()
        if now >= end:
            break
        for event in stream.poll(end - now, start + window):
            state.feed(event, time.monotonic())
    return Survey(state.result(), pinged, time.perf_counter() - started)


def hold(
    client: Client,
    stream: EventStream,
    watch: ElectionWatch,
    topic: str,
    action: Any,
    *,
    timeout: float,
    wait_acks: bool = False,
) -> ElectionWatch:
    """Send the ``election`` command of ``watch.id`` and feed the watch until
    every participant decided (``wait_acks``: every ack arrived) or
    ``timeout`` seconds passed.  Times fed to the watch are
    ``time.perf_counter()`` seconds, ``started_at`` included.  A stream
    opened with ``express=EXPRESS_KEY`` lets the watch fix the winner as
    soon as the requests are in, ahead of the acks queued before them."""
    watch.started_at = time.perf_counter()
    client.election(watch.id, topic, action)
    deadline = time.monotonic() + timeout
    while not (watch.completed_at if wait_acks else watch.settled):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        events = stream.poll(min(remaining, 0.5), deadline)
        for event in stream.take_express():
            watch.sight(event, time.perf_counter())
        for event in events:
            watch.feed(event, time.perf_counter())
    return watch


def check_alive(client: Client, hostnames: Iterable[str], budget: float) -> list[str]:
    """The participants that did not answer ``ping`` within ``budget`` seconds.

    Asked again (1 s per round) until all answered or the budget is spent: a
    node still busy with the election's N x N events on a loaded machine
    answers late, a dead one never does (only that case waits it out).
    """
    missing = sorted(hostnames)
    end = time.monotonic() + budget
    while missing:
        left = end - time.monotonic()
        if left <= 0:
            break
        replies = client.call("ping", {}, timeout=min(1.0, left), destination=missing)
        missing = sorted(set(missing) - replies.replies.keys())
    return missing
