"""Layout 5: the app is ``celery`` in the submodule ``proj.celery``."""
