"""The app the test suite's Celery workers run (``bench/harness/celeryapp.py``,
which must be importable), exposed as a project's ``proj.celery`` submodule."""
