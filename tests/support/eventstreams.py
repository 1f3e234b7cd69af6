"""Re-exported from ``bench/harness/eventstreams.py``: the benchmarks and the tests share one harness."""

from bench.harness.eventstreams import *  # noqa: F403
