"""Transport: the exchanges and queues a node declares ([TRANSPORT-n])."""

from __future__ import annotations

from kombu import Exchange

from wkctl.protocol.broker import event_exchange, pidbox_exchange, reply_exchange

from .registry import Failed, Skipped, check
from .runner import Context

__all__: list[str] = []


@check(
    "transport.exchanges",
    "TRANSPORT-2",
    "the exchanges exist with Celery's attributes",
    also=("TRANSPORT-1", "TRANSPORT-3"),
)
def exchanges(ctx: Context) -> str:
    settings = ctx.probe.settings
    wanted: list[Exchange] = [
        pidbox_exchange(settings.names),
        reply_exchange(settings.names),
        event_exchange(settings.names, settings.transport),
    ]
    conn = ctx.probe.conn
    for exchange in wanted:
        channel = conn.channel()
        try:
            exchange(channel).declare()
        except Exception as exc:
            raise Failed(
                f"exchange {exchange.name} exists with other attributes: {exc}",
                expected=f"{exchange.type}, durable={exchange.durable}",
                actual=str(exc),
            ) from None
        finally:
            try:
                channel.close()
            except Exception:
                pass
    return ", ".join(f"{e.name} ({e.type})" for e in wanted)


@check("transport.pidbox-queue", "TRANSPORT-4", "its pidbox queue has the standard name")
def pidbox_queue(ctx: Context) -> str:
    settings = ctx.probe.settings
    if settings.transport not in ("amqp", "amqps", "pyamqp"):
        raise Skipped(f"queue names are not observable on {settings.transport} (fanout is Pub/Sub)")
    name = settings.names.node_queue(ctx.node)
    channel = ctx.probe.conn.channel()
    try:
        channel.queue_declare(queue=name, passive=True)
    except Exception as exc:
        text = str(exc)
        if "RESOURCE_LOCKED" in text or "405" in text:
            return f"{name} exists (exclusive to the node)"
        raise Failed(
            f"no queue {name}", expected=f"the queue {name}", actual=text or type(exc).__name__
        ) from None
    finally:
        try:
            channel.close()
        except Exception:
            pass
    return f"{name} exists"
