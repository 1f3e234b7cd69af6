"""Brokers, Celery worker processes, third-party tools and event streams.

The harness the benchmarks run clusters with; the test suite uses it too,
through ``tests/support`` (which re-exports these modules under its own
names). Worker processes import ``celeryapp`` from this folder (it is their
``PYTHONPATH`` and working directory).
"""
