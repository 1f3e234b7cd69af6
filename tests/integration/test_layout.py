"""The unit tests stand alone: they collect with Celery unimportable.

``tests/unit/conftest.py`` refuses network, processes and ``import celery``
while a unit test runs; this checks the other half, collection (module-level
imports of the unit modules and of the conftests they load), in a fresh
interpreter where ``import celery`` fails as it does in a venv made with
README's unit command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

NO_CELERY = """
import sys

class NoCelery:
    def find_spec(self, name, path=None, target=None):
        if name == "celery" or name.startswith("celery."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NoCelery())
import pytest

code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests/unit"])
assert "celery" not in sys.modules, sorted(m for m in sys.modules if m.startswith("celery"))
sys.exit(code)
"""


def test_unit_tests_collect_without_celery() -> None:
    env = dict(
        os.environ,
        WKCTL_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:1//",
        WKCTL_TEST_REDIS_URL="redis://127.0.0.1:1/0",
    )
    result = subprocess.run(
        [sys.executable, "-c", NO_CELERY],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert "tests collected" in last and "error" not in last, last
