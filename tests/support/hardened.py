"""Re-exported from ``bench/harness/hardened.py``: the benchmarks and the tests share one harness."""

from bench.harness.hardened import *  # noqa: F403
