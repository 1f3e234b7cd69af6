"""Helpers shared by the test suite (brokers, Celery workers, captures)."""
