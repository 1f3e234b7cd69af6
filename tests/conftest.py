"""Options and session settings for the whole suite (unit and integration).

Light on purpose: it imports nothing from the broker or Celery harness, so
``tests/unit`` collects and runs without them. The broker and Celery
fixtures live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts background commands with SIGINT
    # ignored, and children inherit "ignored": the wkctl processes the
    # tests interrupt (Ctrl-C -> exit 130) would then never see the signal.
    # Restore a handler so every child starts with the default disposition.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # wkctl keeps state under $XDG_STATE_HOME (the embedded broker, the
    # cache of nodes known alive): the suite gets its own, so that neither
    # the user's state nor an earlier run changes what a test sees.  Tests
    # that need a private one still set their own.
    state = tempfile.mkdtemp(prefix="wkctl-test-state-")
    os.environ["XDG_STATE_HOME"] = state
    config.add_cleanup(lambda: shutil.rmtree(state, ignore_errors=True))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False, help="run long fuzz and soak tests"
    )
    parser.addoption(
        "--release-matrix",
        nargs="?",
        const="all",
        default=None,
        metavar="RELEASES",
        help="run tests/integration/test_release_matrix.py for every Celery release (or the comma-separated "
        "ones given) from cached venvs in .venv-matrix/, instead of the CI subset",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long-running: opt in with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
