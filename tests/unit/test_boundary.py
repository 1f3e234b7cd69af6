"""The unit tests' guard (``tests/unit/conftest.py``) refuses what a unit test must not do."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys

import pytest


def test_a_unit_test_cannot_connect() -> None:
    with pytest.raises(AssertionError, match="must not open a network connection"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_a_unit_test_cannot_start_a_process() -> None:
    with pytest.raises(AssertionError, match="must not start a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_a_unit_test_cannot_import_celery() -> None:
    if "celery" in sys.modules:
        pytest.skip("Celery was loaded by the integration tests of this same run")
    with pytest.raises(AssertionError, match="must not import celery"):
        importlib.import_module("celery")
