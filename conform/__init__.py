"""The conformance kit behind ``wkctl conform``: probes a live node over a
real broker and reports, statement by statement, what it gets right.

``CHECKS`` holds every check in run order (importing :mod:`.checks`
registers them); :func:`select` picks the ones to run and
:func:`~wkctl.conform.runner.run` runs them.
"""

from __future__ import annotations

from . import checks as _checks  # noqa: F401  (registers the checks)
from . import control as _control  # noqa: F401  (registers the control-vocabulary checks)
from .registry import CHECKS, Check, Failed, Skipped, select
from .runner import Result, Run, run
from .statements import STATEMENTS, Statement

__all__ = [
    "CHECKS",
    "STATEMENTS",
    "Check",
    "Failed",
    "Result",
    "Run",
    "Skipped",
    "Statement",
    "run",
    "select",
]
