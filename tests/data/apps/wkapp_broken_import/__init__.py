"""Imports a dependency that is not installed."""

import wkapp_no_such_dependency  # noqa: F401
