"""Re-exported from ``bench/harness/workers.py``: the benchmarks and the tests share one harness."""

from bench.harness.workers import *  # noqa: F403
from bench.harness.workers import _die_with_parent  # noqa: F401
