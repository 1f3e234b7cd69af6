"""A package without any Celery app (and without a ``celery`` submodule)."""

VERSION = "1.0"
