"""The ``Mingle`` step (Celery: ``celery.worker.consumer.mingle.Mingle``)
over the sans-IO core; see :mod:`wkctl.protocol.bootsteps`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .mingle import SyncResult
from .node import Action, Log, Node
from .vocab import CELERY_MINGLE_DRIVERS, WKCTL_EXTENSION_DRIVERS

if TYPE_CHECKING:
    from .binding import NodeHandle
from .steps_common import (
    DEFAULT_WAIT,
    Events,
    _configure,
    _in_loop,
    _log,
    _node,
    _step_enabled,
    driver_type,
)


class Mingle:
    """Bootstep syncing state with neighbor nodes.

    At startup (and after every reconnection) this syncs the logical clock
    and the revoked task ids with the other nodes of the cluster
    ([MINGLE-1]).  The node core runs that round itself when the binding
    starts the node; :meth:`start` / :meth:`sync` run another one on demand,
    through the methods below, exactly as Celery's step is structured.
    """

    label = "Mingle"
    requires: tuple[Any, ...] = (Events,)
    #: Celery's ``{'amqp', 'redis', 'gcpubsub'}`` plus wkctl's extensions
    #: (the embedded ``filesystem`` broker), see [TRANSPORT-10].
    compatible_transports: frozenset[str] = CELERY_MINGLE_DRIVERS | WKCTL_EXTENSION_DRIVERS

    def __init__(self, c: NodeHandle, without_mingle: bool = False, **kwargs: Any) -> None:
        """Decide whether the step runs, as Celery does:
        ``enabled = not without_mingle and compatible_transport(...)``.

        A disabled step logs why, and the node then starts without a
        ``hello`` round (its clock counts as synced at once).  ``timeout``
        (keyword) bounds the replies :meth:`send_hello` collects (default:
        the node's ``mingle_timeout``, 1 s as in Celery, [MINGLE-2]).
        """
        self.c = c
        self.without_mingle = without_mingle
        self.timeout = float(kwargs.pop("timeout", _node(c).config.mingle_timeout))
        self.kwargs = kwargs
        self.enabled = _step_enabled(
            c,
            "Mingle",
            without_mingle,
            self.compatible_transports,
            "peers there are not known to answer hello",
        )
        _configure(c, "mingle", self.enabled, "Mingle")

    def compatible_transport(self, app_or_connection: Any) -> bool:
        """Whether the broker's transport is one this step runs on.

        Accepts what Celery's does (an app: its ``connection_for_read()``'s
        driver type) and also a kombu ``Connection``, ``BrokerSettings``, a
        ``Binding``, a ``NodeHandle`` or a URL.
        """
        return driver_type(app_or_connection) in self.compatible_transports

    def start(self, c: NodeHandle) -> SyncResult | None:
        """Celery's ``start``: :meth:`sync`.  Does nothing (returns ``None``)
        when the step is disabled, as Celery's blueprint skips a disabled
        step."""
        if not self.enabled:
            _log(c, logging.DEBUG, "mingle: step disabled, not syncing")
            return None
        return self.sync(c)

    def sync(self, c: NodeHandle) -> SyncResult:
        """Say hello and merge every usable reply ([MINGLE-1], [MINGLE-3]):
        one round of the core's Mingle (the node stays online).

        Logs Celery's lines (``mingle: searching for neighbors``, ``mingle:
        sync with N nodes``, ``mingle: sync complete`` / ``mingle: all
        alone``) and, per [MINGLE-8], each peer whose reply could not be
        used.  Celery returns nothing; this returns the core's
        :class:`SyncResult` (peers synced, failures, ids added, clock).
        """
        return self._round(c)[1]

    def send_hello(self, c: NodeHandle) -> dict[str, Any]:
        """Broadcast ``hello {from_node, revoked}`` and return the replies as
        ``{nodename: reply}``, without this node's own reply ([MINGLE-1],
        [MINGLE-5]).

        The round is the core's: revoked ids oldest first in the list form
        ([REVOKED-5]), clock headers applied ([CLOCK-3], [CLOCK-5]), and it
        ends as soon as the replies have settled ([MINGLE-2]), within
        ``timeout`` at most.  Every usable reply is also merged, as the
        core does with each reply it receives.
        """
        return self._round(c)[0]

    def _round(self, c: NodeHandle) -> tuple[dict[str, Any], SyncResult]:
        node = _node(c)
        rounds = len(c.syncs)
        session: list[Any] = []

        def begin(node: Node, now: float) -> list[Action]:
            node.config.mingle_timeout = self.timeout
            out = node.sync(now)
            session.append(node.mingle)
            return out

        _in_loop(c, begin, None)
        c.wait_for(lambda h: len(h.syncs) > rounds, self.timeout + DEFAULT_WAIT)
        replies = dict(session[0].replies) if session and session[0] is not None else {}
        replies.pop(node.name, None)
        return replies, node.last_sync or SyncResult(clock=node.clock.value)

    def _apply(self, c: NodeHandle, fn: Callable[[Node, float, list[Action]], Any]) -> Any:
        """Run a state-only core method under the binding's lock in the
        caller's thread, and log the lines it returned."""
        out: list[Action] = []
        with c.binding.lock:
            value = fn(_node(c), time.time(), out)
        for action in out:
            if isinstance(action, Log):
                _log(c, action.level, action.message)
        return value

    def on_node_reply(self, c: NodeHandle, nodename: str, reply: Any) -> bool:
        """Merge one peer's reply; a reply that cannot be used (``null``,
        ``{"error": ...}``, not an object) is logged and skipped, never
        fatal ([MINGLE-3], [MINGLE-8]).  Celery passes any truthy reply to
        :meth:`sync_with_node`, so an error reply counts as a sync there
        (DEFECT-25).  Returns whether the reply was used."""
        result = SyncResult()

        def apply(node: Node, now: float, out: list[Action]) -> bool:
            out.extend(node.on_node_reply(nodename, reply, now, result))
            return nodename in result.peers

        return bool(self._apply(c, apply))

    def sync_with_node(
        self, c: NodeHandle, clock: Any = None, revoked: Any = None, **kwargs: Any
    ) -> int:
        """Apply one reply's ``clock`` and ``revoked`` (other keys are
        ignored, as in Celery, [MSG-2]).  Returns the number of ids added."""
        self.on_clock_event(c, clock)
        return self.on_revoked_received(c, revoked)

    def on_clock_event(self, c: NodeHandle, clock: Any) -> int:
        """Adjust the clock to a peer's value when one is given, otherwise
        forward it ([MINGLE-3], [CLOCK-2]): the core's ``on_clock_event``.

        Celery adopts any value (``app.clock.adjust(clock)``); the core
        applies the poisoning bounds first ([CLOCK-1], [CLOCK-6],
        [CLOCK-7]): a value that is not a clock, or jumps too far, is logged
        and the clock only moves forward by one.  Returns the clock after
        the event.
        """
        return int(
            self._apply(
                c, lambda node, now, out: node.on_clock_event(clock, "mingle peer", now, out)
            )
        )

    def on_revoked_received(self, c: NodeHandle, revoked: Any) -> int:
        """Merge a peer's revoked ids, in either wire form ([REVOKED-4]):
        the core's ``on_revoked_received``.

        Celery 4.2-5.6 kept the peer's ``LimitedSet`` stamps (monotonic
        times of another host); wkctl stamps received ids with the local
        time ([REVOKED-3]), so they expire on this node's schedule.  Ids
        that are not sane strings are skipped and a list longer than the
        bound is truncated, oldest first ([REVOKED-1]).  Returns the number
        of ids added.
        """
        merged = self._apply(c, lambda node, now, out: node.on_revoked_received(revoked, now))
        if merged.skipped or merged.truncated:
            _log(
                c,
                logging.WARNING,
                f"mingle: skipped {merged.skipped} bad revoked ids, truncated {merged.truncated}",
            )
        return int(merged.added)
