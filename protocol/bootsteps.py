"""Celery's ``Mingle`` and ``Gossip`` bootsteps, as wkctl classes.

People arrive here from Celery's API reference
(``celery.worker.consumer.mingle.Mingle``,
``celery.worker.consumer.gossip.Gossip``).  These classes carry the same
names, attributes and methods with the same meaning, so that reading one
reference explains the other.  They hold no protocol logic: every rule
lives in the sans-IO core (:mod:`wkctl.protocol.node` and the modules it
uses) and these methods hand work to it.  Where Celery's behaviour is a
defect that the spec fixes, the method's docstring says what wkctl does
instead and cites the spec statement (``spec/protocol.md``).

What Celery calls the consumer ``c`` is, here, a :class:`NodeHandle`: one
node hosted by a :class:`~wkctl.protocol.binding.Binding`.  Build the steps
the way Celery's consumer does, before the node starts::

    binding = Binding(settings)
    c = binding.add_node("me@host")
    mingle = Mingle(c)                  # decides whether the node mingles
    gossip = Gossip(c, interval=5.0)    # ... and whether it gossips
    gossip.on.node_join.add(lambda worker: print(worker.hostname, "joined"))
    binding.start()                     # the node starts: hello, then worker-online

Constructing a step decides ``enabled`` (``without_mingle`` /
``without_gossip``, and whether the transport supports the step) and
writes it into the node's configuration, so the node core does at start
exactly what Celery's consumer does when it starts these steps: the Mingle
round (``hello``), then ``worker-online`` and heartbeats, event
consumption, the liveness sweep and elections.  A disabled step logs one
line saying why.  In wkctl's node one switch covers Celery's Gossip *and*
Heart steps (like ``wkctl node --without-gossip``): a node that does not
follow heartbeats does not send them either.

Threads: kombu connections are not thread-safe, so everything that
publishes runs in the binding's loop thread.  Methods that publish
(``election``, ``call_task``, ``on_elect``, ``on_elect_ack``,
``on_message``, ``periodic``) hand their work to the loop and, when called
from another thread, wait until it is done (``wait`` seconds at most);
called from the loop itself (a join handler, an election handler) they
queue it and return at once.  Methods that only change the node's state
(``on_clock_event``, ``on_revoked_received``) run under the binding's lock
in the caller's thread.

The classes live in :mod:`.steps_mingle`, :mod:`.steps_gossip` and
:mod:`.steps_common`; this module is their import path.
"""

from __future__ import annotations

from .binding import inbound_from_message
from .steps_common import DEFAULT_WAIT, Events, driver_type, logger
from .steps_gossip import ElectionHandlers, Gossip
from .steps_mingle import Mingle

__all__ = [
    "DEFAULT_WAIT",
    "ElectionHandlers",
    "Events",
    "Gossip",
    "Mingle",
    "driver_type",
    "inbound_from_message",
    "logger",
]
