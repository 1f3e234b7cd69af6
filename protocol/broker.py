"""Broker settings and the kombu objects every wkctl component declares.

The node binding, the CLI client and the conformance kit all open
connections and declare the same exchanges; they must declare them with
exactly the arguments Celery uses, or RabbitMQ refuses the second
declaration (``PRECONDITION_FAILED``).  This module is that one place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kombu import Connection, Consumer, Exchange, Queue
from kombu.utils.url import maybe_sanitize_url

from .vocab import FANOUT_EVENT_TRANSPORTS, REDIS_TRANSPORTS
from .wire import JSON_CONTENT_TYPE, Names

__all__ = [
    "AckWindow",
    "EVENT_WINDOW",
    "WINDOWED_MIN_TTL",
    "windowed_ttl",
    "BrokerSettings",
    "EMBEDDED_SOURCE",
    "embedded_broker_dir",
    "embedded_settings",
    "state_dir",
    "event_exchange",
    "mask_url",
    "names_from_conf",
    "pidbox_exchange",
    "reply_exchange",
    "transport_of",
]

#: Event messages a consumer holds unacknowledged where the broker lets it
#: (RabbitMQ): enough to keep the broker streaming (acknowledged in one frame
#: per half window), few enough that a message of another queue on the same
#: connection (a control request, an election's requests) never waits behind
#: more than this many events in the connection during a flood.
EVENT_WINDOW = 200


class AckWindow:
    """The acknowledgements of a consumer with a prefetch window of ``size``:
    every message taken is acknowledged, one frame (``multiple=True``, no
    reply awaited) per half window, and the rest when the owner is idle
    (:meth:`flush`), so the broker never stops streaming and a quiet
    consumer holds nothing unacknowledged for long (RabbitMQ's
    ``consumer_timeout`` would close its channel)."""

    def __init__(self, size: int = EVENT_WINDOW) -> None:
        self.size = size
        #: delivery tag of the last message taken and not yet acknowledged
        self.tag: int | None = None
        self.pending = 0

    def taken(self, channel: Any, delivery_tag: int) -> None:
        self.tag = delivery_tag
        self.pending += 1
        if self.pending * 2 >= self.size:
            self.flush(channel)

    def flush(self, channel: Any) -> None:
        if self.tag is not None and channel is not None:
            channel.basic_ack(self.tag, multiple=True)
        self.reset()

    def reset(self) -> None:
        """Forget the tags (a new channel numbers its deliveries afresh)."""
        self.tag, self.pending = None, 0


#: Shortest message TTL of an event queue consumed through a window: the
#: backlog then waits in the broker, where the queue's TTL (Celery's
#: ``event_queue_ttl``, 5 s) would drop what a consumer a few seconds behind
#: has not taken yet; without a window it waited in the connection instead,
#: where nothing expires.
WINDOWED_MIN_TTL = 60.0


def windowed_ttl(names: Names) -> float | None:
    """The message TTL of an event queue consumed through a window (None:
    none, as configured)."""
    ttl = names.event_queue_ttl
    return None if ttl is None else max(ttl, WINDOWED_MIN_TTL)


#: How long Redis channels block in one BRPOP (kombu's default: 1 s, which
#: a short-lived command pays again when it closes).
REDIS_BRPOP_TIMEOUT = 0.05

#: How often the embedded filesystem broker polls its folders, in seconds:
#: short, so that a local cluster answers ``hello`` in tens of milliseconds.
EMBEDDED_POLLING_INTERVAL = 0.01


def mask_url(url: str) -> str:
    """Hide the password the way Celery prints broker URLs (``amqp://guest:**@host//``);
    each URL of a failover list (``amqp://a;amqp://b``) on its own."""
    if ";" in url:
        return ";".join(mask_url(part) for part in url.split(";"))
    if "@" not in urlsplit(url).netloc if "://" in url else True:
        return url  # nothing to hide (and kombu would rewrite filesystem:// as filesystem:///)
    masked = maybe_sanitize_url(url)
    return masked if isinstance(masked, str) else str(masked)


def transport_of(url: str) -> str:
    """The transport name of a URL (``amqp``, ``redis``, ``filesystem``...)."""
    scheme = urlsplit(url).scheme if "://" in url else url
    return scheme.split("+", 1)[0].lower()


#: ``BrokerSettings.source`` of the embedded broker chosen because nothing
#: else was configured.
EMBEDDED_SOURCE = "embedded default"


def state_dir() -> Path:
    """wkctl's per-user state folder (``$XDG_STATE_HOME/wkctl``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "wkctl"


def embedded_broker_dir() -> Path:
    """Per-user folder of the embedded broker (``$XDG_STATE_HOME/wkctl/broker``)."""
    return state_dir() / "broker"


@dataclass(frozen=True)
class BrokerSettings:
    """Where the cluster is and how to talk to it.

    ``source`` says where the URL came from (``--broker``, an environment
    variable, the config file, a Celery app or the embedded default) so
    that ``wkctl -v`` and error messages can say it.
    """

    url: str
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    ssl: bool | Mapping[str, Any] | None = None
    names: Names = field(default_factory=Names)
    source: str = "default"
    connect_timeout: float = 4.0

    @property
    def transport(self) -> str:
        return transport_of(self.url)

    @property
    def failover_retries(self) -> int:
        """Connection attempts beyond the first that a failover list
        (``amqp://a;amqp://b``) needs so that kombu tries every URL once:
        kombu moves to the next URL only when an attempt fails."""
        return len([part for part in self.url.split(";") if part.strip()]) - 1

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @property
    def embedded(self) -> bool:
        return self.transport == "filesystem"

    @property
    def cluster_key(self) -> str:
        """Names one cluster across runs: the masked URL (the folder for the
        embedded broker) and the control exchange."""
        where = self.masked_url
        if self.embedded:
            where += str(self.transport_options.get("data_folder_in", ""))
        return f"{where} {self.names.pidbox_exchange}"

    def prepare(self) -> None:
        """Create the folders of the embedded broker; nothing for servers."""
        if self.embedded:
            for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
                folder = self.transport_options.get(key)
                if folder:
                    Path(folder).mkdir(parents=True, exist_ok=True)

    def connection(self, **kwargs: Any) -> Connection:
        """A new, not yet connected, kombu connection."""
        self.prepare()
        options: dict[str, Any] = {
            "transport_options": dict(self.transport_options),
            "connect_timeout": self.connect_timeout,
        }
        if self.ssl:
            options["ssl"] = self.ssl if isinstance(self.ssl, Mapping) else True
        if self.embedded:
            from .fsbroker import Transport

            options["transport"] = Transport
        options.update(kwargs)
        if self.transport in REDIS_TRANSPORTS and "polling_interval" not in self.transport_options:
            return _QuickBrpopConnection(self.url, **options)
        return Connection(self.url, **options)


class _QuickBrpopConnection(Connection):  # type: ignore[misc]
    """A Redis connection whose transport blocks in BRPOP for at most
    :data:`REDIS_BRPOP_TIMEOUT` and never sleeps between polls.

    kombu's Redis channel blocks in BRPOP for up to 1 s when it closes:
    short-lived commands would pay that on every exit.  Not through the
    ``polling_interval`` option, which kombu also sleeps after every poll
    that delivered nothing (a subscription confirmation, an empty BRPOP):
    that stalled event streams by 50 ms at a time.  Set in
    ``create_transport`` so that a transport kombu builds again (failover to
    the next URL, ``ensure()`` after an error, ``clone()``) keeps it.  A
    user's own ``polling_interval`` wins (this class is then not used).
    """

    def create_transport(self) -> Any:
        transport = super().create_transport()
        transport.brpop_timeout = REDIS_BRPOP_TIMEOUT
        transport.polling_interval = None
        return transport


def embedded_settings(folder: Path | None = None, names: Names | None = None) -> BrokerSettings:
    """The zero-configuration broker: kombu's filesystem transport in a state folder.

    Every local ``wkctl`` process using the same folder is in the same
    cluster, with no broker server to install.
    """
    root = folder or embedded_broker_dir()
    queues = str(root / "queues")
    options = {
        "data_folder_in": queues,
        "data_folder_out": queues,
        "control_folder": str(root / "control"),
        "polling_interval": EMBEDDED_POLLING_INTERVAL,
        "store_processed": False,
    }
    return BrokerSettings(
        url="filesystem://",
        transport_options=options,
        names=names or Names(),
        source=EMBEDDED_SOURCE,
    )


def event_exchange(names: Names, transport: str) -> Exchange:
    """The event exchange: a durable topic exchange, fanout where topics don't route."""
    type_ = "fanout" if transport in FANOUT_EVENT_TRANSPORTS else "topic"
    return Exchange(names.event_exchange, type=type_)


def pidbox_exchange(names: Names) -> Exchange:
    """The broadcast exchange of control requests, declared as kombu's Mailbox does."""
    return Exchange(names.pidbox_exchange, type="fanout", durable=False, delivery_mode="transient")


def reply_exchange(names: Names) -> Exchange:
    """The direct exchange replies go to, declared as kombu's Mailbox does."""
    return Exchange(names.reply_exchange, type="direct", durable=False, delivery_mode="transient")


# -- queues: one factory each, used by the binding, the client, the bootsteps,
# the hardened steps and the conformance kit ------------------------------------


def reply_queue(names: Names, oid: str, *, exclusive: bool = True) -> Queue:
    """The queue a requester reads replies from (``<oid>.reply.<control>.pidbox``),
    declared as kombu's Mailbox declares it: transient, auto-deleted, expiring
    unused after ``control_queue_expires`` ([TRANSPORT-5], [TRANSPORT-12]).
    ``exclusive`` ties it to one connection (off where the queue outlives the
    connection that declared it, as in a Celery worker's pidbox)."""
    return Queue(
        names.reply_queue(oid),
        exchange=reply_exchange(names),
        routing_key=oid,
        durable=False,
        exclusive=exclusive,
        auto_delete=True,
        expires=names.control_queue_expires,
        message_ttl=names.control_queue_ttl,
    )


def pidbox_queue(names: Names, nodename: str, *, exclusive: bool = True) -> Queue:
    """A node's control queue (``<nodename>.<control>.pidbox``) on the broadcast
    exchange ([TRANSPORT-4], [TRANSPORT-11]); exclusive, so that a second node
    of the same name on RabbitMQ fails instead of sharing it."""
    return Queue(
        names.node_queue(nodename),
        exchange=pidbox_exchange(names),
        routing_key="",
        durable=False,
        exclusive=exclusive,
        auto_delete=True,
        expires=names.control_queue_expires,
        message_ttl=names.control_queue_ttl,
    )


def event_queue(
    names: Names,
    transport: str,
    node_id: str,
    routing_key: str = "#",
    *,
    exclusive: bool = True,
    message_ttl: float | None = None,
) -> Queue:
    """An event queue (``<event_queue_prefix>.<node_id>``) bound to the event
    exchange with ``routing_key`` (``worker.#`` for Gossip, ``#`` for every
    event), transient and auto-deleted; messages live ``message_ttl`` seconds
    (default: the ``event_queue_ttl`` setting) and the queue expires unused
    after ``event_queue_expires`` ([TRANSPORT-7])."""
    return Queue(
        names.event_queue(node_id),
        exchange=event_exchange(names, transport),
        routing_key=routing_key,
        durable=False,
        exclusive=exclusive,
        auto_delete=True,
        message_ttl=names.event_queue_ttl if message_ttl is None else message_ttl,
        expires=names.event_queue_expires,
    )


def gossip_consumer(
    channel: Any,
    names: Names,
    transport: str,
    node_id: str,
    on_message: Callable[[Any], None],
    *,
    message_ttl: float | None,
    exclusive: bool = True,
) -> Consumer:
    """The consumer of a Gossip step (wkctl's and the hardened worker's), as
    Celery's Gossip builds it: an :func:`event_queue` bound with
    ``worker.#`` ([TRANSPORT-7]), accepting JSON only ([MSG-1]), no acks;
    raw messages go to ``on_message``, where the core decodes them (kombu
    never deserializes a body)."""
    queue = event_queue(
        names, transport, node_id, "worker.#", exclusive=exclusive, message_ttl=message_ttl
    )
    return Consumer(
        channel, queues=[queue], on_message=on_message, accept=[JSON_CONTENT_TYPE], no_ack=True
    )


def task_queue(name: str) -> Queue:
    """A Celery task queue as Celery declares one for a task's ``queue``
    option: a durable queue on a direct exchange of the same name, routing
    key = name (where an election winner's task message lands)."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def names_from_conf(conf: Mapping[str, Any]) -> Names:
    """Exchange and queue names from a Celery app's configuration."""
    defaults = Names()

    def get(key: str, default: Any) -> Any:
        value = conf.get(key)
        return default if value is None else value

    return Names(
        control_exchange=str(get("control_exchange", defaults.control_exchange)),
        event_exchange=str(get("event_exchange", defaults.event_exchange)),
        event_queue_prefix=str(get("event_queue_prefix", defaults.event_queue_prefix)),
        event_queue_ttl=get("event_queue_ttl", defaults.event_queue_ttl),
        event_queue_expires=get("event_queue_expires", defaults.event_queue_expires),
        control_queue_ttl=get("control_queue_ttl", defaults.control_queue_ttl),
        control_queue_expires=get("control_queue_expires", defaults.control_queue_expires),
    )
