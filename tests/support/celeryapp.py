"""Re-exported from ``bench/harness/celeryapp.py``: the benchmarks and the tests share one harness."""

from bench.harness.celeryapp import *  # noqa: F403
