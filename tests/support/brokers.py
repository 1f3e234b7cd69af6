"""Re-exported from ``bench/harness/brokers.py``: the benchmarks and the tests share one harness."""

from bench.harness.brokers import *  # noqa: F403
