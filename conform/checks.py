"""The checks, one function per observable requirement, in run order.

Each check cites the spec statement it verifies, sends what it needs, and
on failure says what it expected and what it observed.  Checks that change
the node's state use fresh task ids and election ids (``conform-...``), so
runs can repeat against the same node, including one doing real work.

Real Celery workers must survive a run.  The probe never sends a Celery
worker what the spec lists as fatal to it: a malformed heartbeat
(DEFECT-6, fatal to every Celery worker on the broker), an election it
would hold alone (DEFECT-1), clock values it cannot handle (DEFECT-8).
Against a Celery worker those checks report the documented defect as a
known deviation without sending anything; against any other node they
probe for real.  The election check injects a synthetic peer's
``worker-elect`` first, so that a Celery worker never holds one alone.
The limit probes (a body over 8 MiB, one nested 66 levels deep, both
addressed to the node but delivered to every pidbox queue) are sent to
Celery workers too: they decode and answer them and keep serving
(DEFECT-13), which the kit's tests check on both brokers.

The checks live in one module per spec area (``checks_<area>.py``, helpers
in :mod:`.checks_common`); importing this module registers them all, in run
order (the order of the imports below).  A check that builds on another
check's effect declares it with ``needs`` (see :mod:`.facts`).
"""

from __future__ import annotations

import importlib

__all__ = ["AREAS"]

#: The check modules, in run order: registering them in this order is the
#: order checks run in (transport first, the run-wide security check last).
AREAS = (
    "transport",
    "pidbox",
    "limits",
    "clock",
    "revoke",
    "mingle",
    "launch",
    "events",
    "election",
    "credentials",
)

for _area in AREAS:
    importlib.import_module(f"{__package__}.checks_{_area}")
