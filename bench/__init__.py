"""Benchmarks of wkctl against Celery on the same work: ``python -m bench``."""
