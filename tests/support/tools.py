"""Re-exported from ``bench/harness/tools.py``: the benchmarks and the tests share one harness."""

from bench.harness.tools import *  # noqa: F403
