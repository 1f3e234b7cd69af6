"""Layout 4: the app is ``app`` in the submodule ``proj.celery``."""
