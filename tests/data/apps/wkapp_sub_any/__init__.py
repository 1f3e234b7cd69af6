"""Layout 6: some other attribute of the submodule ``proj.celery`` is the app."""
