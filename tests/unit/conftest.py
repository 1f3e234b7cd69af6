"""The unit tests' promise, enforced: no network, no subprocess, no Celery.

Every test under ``tests/unit`` runs with ``socket.connect`` (and its
relatives), ``subprocess.Popen`` and ``os.fork`` replaced by functions that
raise, and with ``import celery`` refused when Celery is not already loaded
(it is, in a full run, by the integration modules collected first). A unit
test that needs any of them belongs in ``tests/integration``. The guard is
why the unit command passes on a machine with no broker and no Celery.
"""

from __future__ import annotations

import importlib.abc
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, NoReturn

import pytest


class UnitTestBoundary(AssertionError):
    """A unit test reached for the network, a process or Celery."""


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise UnitTestBoundary(f"a unit test must not {what}: move it to tests/integration")

    return refuse


class _NoCelery(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        if name == "celery" or name.startswith("celery."):
            raise UnitTestBoundary(
                f"a unit test must not import {name}: move it to tests/integration"
            )
        return None


@pytest.fixture(autouse=True)
def _unit_boundary(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, _refuse("open a network connection"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a process"))
    monkeypatch.setattr(os, "fork", _refuse("fork"))
    finder = None if "celery" in sys.modules else _NoCelery()
    if finder is not None:
        sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder is not None:
            sys.meta_path.remove(finder)
