"""Celery's documented Django layout: the package re-exports the app of its
``celery`` submodule, so ``proj.celery`` is the submodule, not the app."""

from .celery import app as celery_app

__all__ = ("celery_app",)
