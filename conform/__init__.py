"""The conformance kit behind ``wkctl conform``: probes a live node over a
real broker and reports, statement by statement, what it gets right.

``CHECKS`` holds every check in run order (importing :mod:`.checks` and
:mod:`.control` registers them); :func:`select` picks the ones to run and
:func:`~wkctl.conform.runner.run` runs them.

The names are loaded on first use, so that ``python -m
wkctl.conform.specparse`` (which regenerates :mod:`.statements` from the
spec) runs even while the checks cite a statement the old copy lacks.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports below exist for type checkers only)
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "CHECKS": "registry",
    "Check": "registry",
    "Failed": "registry",
    "Skipped": "registry",
    "select": "registry",
    "Result": "runner",
    "Run": "runner",
    "run": "runner",
    "STATEMENTS": "statements",
    "Statement": "statements",
}

__all__ = sorted(_EXPORTS)


def _register_checks() -> None:
    importlib.import_module(f"{__name__}.checks")
    importlib.import_module(f"{__name__}.control")


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module in ("registry", "runner"):
        _register_checks()  # CHECKS is complete only once every check module ran
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .registry import CHECKS, Check, Failed, Skipped, select
    from .runner import Result, Run, run
    from .statements import STATEMENTS, Statement
