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
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Consumer, Producer, Queue

from .broker import (
    EVENT_WINDOW,
    AckWindow,
    BrokerSettings,
    event_queue,
    pidbox_exchange,
    reply_exchange,
    reply_queue,
    windowed_ttl,
)
from .clock import LamportClock
from .host import SharedClock
from .observers import (
    ElectionOutcome,
    ElectionWatch,
    decode_events,
    election_participants,
    prepare_event,
)
from .reconnect import BACKOFF, Backoff
from .replies import (
    DEFAULT_SETTLE,
    KNOWN_GRACE,
    Collected,
    ReplyCollector,
    asker_name,
    hello_table,
    normalize_clock,
    normalize_revoked,
)
from .vocab import CELERY_SW_IDENT, FANOUT_EVENT_TRANSPORTS, PER_NODE_PIDBOX_TRANSPORTS
from .wire import (
    Limits,
    Names,
    Rejected,
    pidbox_request,
    pidbox_request_headers,
)

# The sans-IO observers live in :mod:`.replies` and :mod:`.observers`; they
# are re-exported here, where they always were importable from.
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


def default_node_name() -> str:
    """A fresh asker name (:func:`~wkctl.protocol.replies.asker_name`) for
    this host: a name no worker has."""
    return asker_name(socket.gethostname(), uuid.uuid4().hex[:8])


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
        # shared with the caller's threads (and the collector): the locked clock
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
        return reply_queue(self.names, oid)

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

    ``express`` (a routing key, e.g. ``worker.elect``) lets the few events
    with that key overtake a flood of others, on transports that route by
    key (RabbitMQ): they also go to a second queue, consumed without a
    window, and :meth:`take_express` hands them over as soon as they
    arrive, while the main queue is consumed through a window of
    ``window`` unacknowledged messages so that its backlog waits in the
    broker, not in this connection's socket ahead of them.  The main queue
    still carries every event, express ones included, in its order.  An
    election needs this: its N requests decide the winner, and on a
    cluster of 50 they would otherwise queue behind up to 2,450 acks.
    Ignored on other transports: on Redis one subscription carries every
    event in one order, and kombu's virtual transports do not acknowledge
    several messages at once.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        routing_key: str = "#",
        limits: Limits | None = None,
        on_notice: Callable[[StreamNotice], None] | None = None,
        backoff: Backoff = BACKOFF,
        backoff_start: float | None = None,
        backoff_max: float | None = None,
        connection: Connection | None = None,
        max_batch: int = 1000,
        express: str | None = None,
        window: int = EVENT_WINDOW,
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.routing_key = routing_key
        self.max_batch = max_batch
        #: the express routing key, when the transport routes by key
        self.express = express if settings.transport in PER_NODE_PIDBOX_TRANSPORTS else None
        #: the main queue goes through a window of unacknowledged messages
        self.windowed = self.express is not None
        self.window = window
        self.limits = limits or Limits()
        self.on_notice = on_notice
        if backoff_start is not None or backoff_max is not None:
            backoff = Backoff(
                start=backoff.start if backoff_start is None else backoff_start,
                max=backoff.max if backoff_max is None else backoff_max,
                factor=backoff.factor,
            )
        #: the reconnect policy (the one :data:`~wkctl.protocol.reconnect.BACKOFF`
        #: unless overridden by ``backoff``, ``backoff_start`` or ``backoff_max``)
        self.backoff = backoff
        self.connection: Connection | None = connection
        self.node_id = str(uuid.uuid4())
        self.messages = 0
        self.events = 0
        self.rejected: list[tuple[str, str]] = []
        self.reconnects = 0
        self._pending: list[Any] = []
        self._down = False
        self._lost_at = 0.0
        self._interval = backoff.start
        self._consumer: Consumer | None = None
        self._express_consumer: Consumer | None = None
        self._channel: Any = None
        self._express_channel: Any = None
        self._express: list[Any] = []
        #: the main queue's acknowledgements (with ``express`` only)
        self._acks = AckWindow(window)

    # -- set-up --------------------------------------------------------------

    @property
    def queue_name(self) -> str:
        return self.names.event_queue(self.node_id)

    def _queue(self) -> Queue:
        return event_queue(
            self.names,
            self.settings.transport,
            self.node_id,
            self.routing_key,
            message_ttl=windowed_ttl(self.names) if self.windowed else None,
        )

    def _decode(self, message: Any) -> list[Any] | None:
        try:
            return decode_events(
                message.body, message.content_type, message.content_encoding, self.limits
            )
        except Rejected as exc:
            self.rejected.append((exc.reason, exc.detail))
            return None

    def _on_message(self, message: Any) -> None:
        self.messages += 1
        if self.windowed:
            self._acks.taken(self._channel, message.delivery_tag)
        items = self._decode(message)
        if items is None:
            return
        self.events += len(items)
        self._pending.extend(items)

    def _on_express(self, message: Any) -> None:
        # Counted once, with the main queue's copy.
        items = self._decode(message)
        if items:
            self._express.extend(items)

    def _attach(self) -> None:
        assert self.connection is not None
        self._channel = self.connection.channel()
        self._acks.reset()
        if self.express is not None:
            # A channel of its own and no window: express events must never
            # wait behind the main queue's, in the broker or in the connection.
            self._express_channel = self.connection.channel()
            self._express_consumer = Consumer(
                self._express_channel,
                [
                    event_queue(
                        self.names, self.settings.transport, f"{self.node_id}.x", self.express
                    )
                ],
                no_ack=True,
                on_message=self._on_express,
                accept=["json"],
            )
            self._express_consumer.consume()
        self._consumer = Consumer(
            self._channel,
            [self._queue()],
            no_ack=not self.windowed,
            prefetch_count=self.window if self.windowed else None,
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
        closers: list[Callable[[], object]] = []
        if self._express_consumer is not None:
            closers.append(self._express_consumer.cancel)
        if self._express_channel is not None:
            closers.append(self._express_channel.close)
        if self._consumer is not None:
            closers.append(self._consumer.cancel)
        if self._channel is not None:
            closers.append(self._channel.close)
        if self.connection is not None:
            closers.append(self.connection.release)
        for closer in closers:
            try:
                closer()
            except Exception:  # best effort: the connection may be gone already
                pass
        self._consumer = None
        self._express_consumer = None
        self._channel = None
        self._express_channel = None

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
            self._interval = self.backoff.start
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
                self._interval = self.backoff.next(self._interval)
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
        self._express_consumer = None
        self._channel = None
        self._express_channel = None
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # a dead connection may fail to close; it is dropped anyway
                pass

    def _notice(self, notice: StreamNotice) -> None:
        if self.on_notice is not None:
            self.on_notice(notice)

    def take_express(self) -> list[Any]:
        """The express events that arrived so far (see ``express``), once each."""
        out, self._express = self._express, []
        return out

    def poll(self, timeout: float, deadline: float | None = None) -> list[Any]:
        """Events that arrived within ``timeout`` seconds (possibly none).

        Returns early, with what the main queue gave so far, when an express
        event arrived (:meth:`take_express`).  ``deadline`` (a
        ``time.monotonic()`` value) bounds reconnection attempts; without it
        the stream retries forever.
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
        express_before = len(self._express)
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
            if len(self._express) > express_before:
                break
            wait = 0.0
        if self._acks.pending:
            try:
                self._acks.flush(self._channel)
            except self._errors() as exc:
                self._reconnect(exc, deadline)
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
