"""What a test needs and may not find: skip locally, fail under ``CI=true``.

The broker and Celery fixtures (``tests/integration/conftest.py``) and the
modules that start workers of their own share these rules: CI must never
pass by not testing.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from .brokers import BrokerPool
from .workers import celery_python

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: broker and Celery tests must run)")
    pytest.skip(reason)


def isolated_url(broker_pool: BrokerPool, kind: str) -> str:
    """A namespace of its own (vhost / Redis db) on the ``kind`` broker."""
    if (broker_pool.amqp_url if kind == "amqp" else broker_pool.redis_url) is None:
        unavailable(f"no {kind} broker for this test")
    return broker_pool.isolated(kind)


def require_celery(version: str) -> None:
    """An interpreter with Celery ``version`` (5.7: the test venv; 5.4: a side venv)."""
    if celery_python(version) is None:
        unavailable(
            f"no Celery {version} interpreter (set WKCTL_TEST_CELERY{version.replace('.', '')}_PYTHON or create .venv-celery{version.replace('.', '')})"
        )
