"""What the Celery-named steps (:mod:`wkctl.protocol.bootsteps`) share: the
event dispatcher step, the transport check, and handing work to the
binding's loop (see that module's docstring for the threading rules).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kombu import Connection

from .broker import BrokerSettings, transport_of
from .node import Action, Node

if TYPE_CHECKING:
    from .binding import NodeHandle


logger = logging.getLogger("wkctl.bootsteps")

#: Longest a method waits for the binding's loop to run the work it handed over.
DEFAULT_WAIT = 5.0


class Events:
    """The event dispatcher step that :class:`Mingle` requires.

    Celery's ``celery.worker.consumer.events.Events`` creates the
    consumer's event dispatcher; in wkctl the binding's producer is that
    dispatcher (it publishes the node core's events), so this class only
    names the dependency, so that ``Mingle.requires`` reads as in Celery.
    """

    label = "Events"
    name = "celery.worker.consumer.events.Events"


# -- adapters between Celery's ``c`` and the binding -------------------------


def driver_type(obj: Any) -> str:
    """The kombu driver type (``amqp``, ``redis``, ``filesystem``...) of a
    Celery app, a kombu ``Connection``, :class:`BrokerSettings`, a
    ``Binding``, a ``NodeHandle`` or a URL, without connecting.

    It is what Celery's ``compatible_transport`` compares
    (``conn.transport.driver_type``): ``sentinel://`` is ``redis``,
    ``pyamqp://`` is ``amqp``.
    """
    if isinstance(obj, str):
        obj = BrokerSettings(url=obj)
    binding = getattr(obj, "binding", None)
    if binding is not None and hasattr(binding, "settings"):
        obj = binding.settings
    elif isinstance(getattr(obj, "settings", None), BrokerSettings):
        obj = obj.settings
    if isinstance(obj, BrokerSettings):
        conn = Connection(obj.url, transport_options=dict(obj.transport_options))
        try:
            return str(conn.transport.driver_type)
        except Exception:  # an unknown transport: fall back to the URL scheme
            return transport_of(obj.url)
        finally:
            conn.release()
    if isinstance(obj, Connection):
        return str(obj.transport.driver_type)
    if hasattr(obj, "connection_for_read"):  # a Celery app, as Celery asks it
        with obj.connection_for_read() as conn:
            return str(conn.transport.driver_type)
    raise TypeError(f"cannot tell the transport of {obj!r}")


def _node(c: NodeHandle) -> Node:
    return c.node


def _log(c: NodeHandle, level: int, message: str, exc: BaseException | None = None) -> None:
    """Log as the binding does (``<node>: <message>``, with ``exc``'s
    traceback when given) and keep the line in the handle's log history,
    next to the core's own lines."""
    logger.log(level, "%s: %s", c.name, message, exc_info=exc)
    logs = getattr(c, "logs", None)
    if logs is not None:
        logs.append((level, message))


def _loop_owns_lock(c: NodeHandle) -> bool:
    """True when the caller is inside the binding's loop (which holds the
    binding's lock while it runs the node and its handlers)."""
    is_owned = getattr(c.binding.lock, "_is_owned", None)
    return bool(is_owned()) if is_owned is not None else False


def _in_loop(
    c: NodeHandle,
    fn: Callable[[Node, float], Iterable[Action] | None],
    wait: float | None = DEFAULT_WAIT,
) -> bool:
    """Run ``fn(node, now)`` in the binding's loop; its actions are performed
    there (published, logged).  Waits until done unless called from the
    loop itself or ``wait`` is None (then it runs right after the caller
    returns).  Returns False only when the loop did not run it within
    ``wait`` seconds (a stopped binding)."""
    done = threading.Event()

    def run(node: Node, now: float) -> Iterable[Action] | None:
        try:
            return fn(node, now)
        finally:
            done.set()

    c.submit(run)
    if wait is None or _loop_owns_lock(c):
        return True
    return done.wait(wait)


def _step_enabled(
    c: NodeHandle, step: str, without: bool, compatible: frozenset[str], why: str
) -> bool:
    """Celery's ``enabled = not without_<step> and compatible_transport(...)``,
    logging why a step is off ([TRANSPORT-10])."""
    if without:
        _log(c, logging.INFO, f"{step} disabled: without_{step.lower()} is set")
        return False
    transport = driver_type(c)
    if transport in compatible:
        return True
    _log(
        c,
        logging.WARNING,
        f"{step} disabled: transport {transport!r} is not one of "
        f"{', '.join(sorted(compatible))} ({why}, [TRANSPORT-10])",
    )
    return False


def _configure(c: NodeHandle, setting: str, value: bool, step: str) -> None:
    """Write the step's decision into the node's configuration.

    Only a node that has not started yet can follow it; a step built for a
    running node says so (it applies at the node's next start).
    """
    config = _node(c).config
    if getattr(config, setting) == value:
        return
    started = getattr(c, "started", None)
    if started is not None and started.is_set():
        _log(
            c,
            logging.WARNING,
            f"{step}: the node is already running with {setting}={getattr(config, setting)}; "
            f"build the step before the binding starts the node",
        )
        return
    setattr(config, setting, value)


# -- Mingle ---------------------------------------------------------------------
