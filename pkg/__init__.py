"""wkctl: the worker-to-worker coordination protocol of Celery clusters.

The distribution installs one import namespace:

* ``wkctl.protocol``: the sans-IO reference library and its kombu binding;
* ``wkctl.schemas``: the JSON Schemas (the contract), shipped as data;
* ``wkctl.cli``: the ``wkctl`` command line;
* ``wkctl.conform``: the conformance kit behind ``wkctl conform``;
* ``wkctl.celery``: ``install(app)``, wkctl's Mingle and Gossip inside
  ``celery worker`` (needs Celery; imported only when asked for).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wkctl")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

__all__ = ["__version__"]
