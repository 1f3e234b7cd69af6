"""``wkctl -A/--app APP``: take the broker and exchange names from a Celery app.

Celery users already describe their cluster in their app (``broker_url``,
``control_exchange``, ``event_exchange``...).  Making them retype it as URLs
and options is how a monitor ends up watching the wrong exchange, so wkctl
finds the app the way ``celery -A`` does and reads the same settings.

How ``APP`` is found (Celery's documented ``--app`` search):

* ``module.path:attribute`` names the app exactly;
* a dotted name ending in an attribute (``proj.celery.app``) is tried as
  ``module:attribute`` first, then as a module, as Celery's
  ``symbol_by_name`` does;
* a bare module ``proj`` is searched in this order: ``proj.app``,
  ``proj.celery``, any attribute of ``proj`` that is a Celery app, then the
  submodule ``proj.celery``: ``proj.celery.app``, ``proj.celery.celery``,
  any Celery app in ``proj.celery``.

Two deliberate differences from Celery 5.7's ``find_app`` code: it looks
into the ``proj.celery`` submodule *before* scanning ``proj``'s attributes
(its documentation lists the order above; the two only disagree when the
package and its ``celery`` submodule hold different apps), and it takes
``proj.app`` even when that is not a Celery app (a Flask ``app`` next to a
Celery ``celery`` is common), which fails later with an unrelated error;
wkctl skips a candidate that is not a Celery app and names it in the "no
app found" message instead.

Like Celery, the current directory is on the import path while the app is
imported.  Celery itself is imported only here, inside functions: it is an
optional extra (``pip install 'wkctl[celery]'``) needed only for ``-A``.

Every expected failure is a one-line :class:`CliError` with exit code 3
(configuration): Celery missing, a module that does not import (with the
import error), no app found (with what was searched), an attribute that is
not a Celery app.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import click

from wkctl.protocol.broker import BrokerSettings, names_from_conf

from .errors import CliError, ExitCode

__all__ = ["find_app", "settings_from_app", "names_from_conf"]

INSTALL_HINT = "pip install 'wkctl[celery]'"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line (with file:line for syntax errors)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
        return _one_line(f"{type(exc).__name__}: {exc.msg}{where}")
    message = str(exc)
    return _one_line(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def _celery_class() -> type:
    """``celery.Celery``, or the one-line error saying how to install it."""
    try:
        from celery import Celery
    except ImportError as exc:
        detail = _describe(exc)
        raise CliError(
            f"-A/--app needs Celery, which cannot be imported ({detail}): {INSTALL_HINT}",
            ExitCode.CONFIG,
        ) from None
    return Celery


@contextmanager
def _cwd_on_path() -> Iterator[None]:
    """Celery's ``cwd_in_path``: modules in the current directory win while importing."""
    cwd = os.getcwd()
    if cwd in sys.path:
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        try:
            sys.path.remove(cwd)
        except ValueError:
            pass


class _Missing(Exception):
    """The module itself does not exist (as opposed to failing inside)."""


def _import(module_name: str, app_name: str) -> ModuleType:
    """Import ``module_name``; raise :class:`_Missing` if it (not a
    dependency of it) does not exist, and a :class:`CliError` if importing
    it fails."""
    try:
        with _cwd_on_path():
            return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise _Missing(missing) from None
        raise CliError(
            f"cannot import {module_name} (from -A {app_name}): {_describe(exc)}", ExitCode.CONFIG
        ) from None
    except (Exception, SystemExit) as exc:
        raise CliError(
            f"cannot import {module_name} (from -A {app_name}): {_describe(exc)}", ExitCode.CONFIG
        ) from None


def _kind(obj: Any) -> str:
    if isinstance(obj, ModuleType):
        return "a module"
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}".removeprefix("builtins.")
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _not_found(module_name: str, app_name: str) -> CliError:
    return CliError(
        f"cannot import {module_name} (from -A {app_name}): no module named {module_name!r} "
        "(is it in the current directory or on PYTHONPATH?)",
        ExitCode.CONFIG,
    )


def _checked(obj: Any, where: str, celery_cls: type) -> tuple[Any, str]:
    if not isinstance(obj, celery_cls):
        raise CliError(f"{where} is not a Celery app (it is {_kind(obj)})", ExitCode.CONFIG)
    return obj, where


def _getattr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def find_app(app_name: str) -> tuple[Any, str]:
    """The Celery app named by ``-A app_name`` and where it was found
    (``"proj.celery:app"``)."""
    celery_cls = _celery_class()
    name = app_name.strip()
    if not name or name.startswith((".", ":")) or name.endswith((".", ":")):
        raise CliError(
            f"-A {app_name!r} is not a module name (expected module, module.path or module:attribute)",
            ExitCode.CONFIG,
        )
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            module = _import(module_name, app_name)
        except _Missing:
            raise _not_found(module_name, app_name) from None
        try:
            obj = _getattr_path(module, attribute)
        except AttributeError:
            raise CliError(
                f"module {module_name} has no attribute {attribute!r} (from -A {app_name})",
                ExitCode.CONFIG,
            ) from None
        return _checked(obj, f"{module_name}:{attribute}", celery_cls)

    # ``proj.celery.app``: module ``proj.celery``, attribute ``app`` first
    # (kombu's symbol_by_name), then the whole name as a module.
    if "." in name:
        parent, _, attribute = name.rpartition(".")
        try:
            module = _import(parent, app_name)
        except _Missing:
            raise _not_found(parent, app_name) from None
        obj = getattr(module, attribute, None)
        if obj is not None and not isinstance(obj, ModuleType):
            return _checked(obj, f"{parent}:{attribute}", celery_cls)
    try:
        module = _import(name, app_name)
    except _Missing:
        raise _not_found(name, app_name) from None
    return _search(module, name, app_name, celery_cls)


def _search(module: ModuleType, name: str, app_name: str, celery_cls: type) -> tuple[Any, str]:
    """Celery's documented search of a bare module name."""
    searched: list[str] = []

    def look(mod: ModuleType, mod_name: str) -> tuple[Any, str] | None:
        for attribute in ("app", "celery"):
            where = f"{mod_name}.{attribute}"
            if not hasattr(mod, attribute):
                searched.append(f"{where} (absent)")
                continue
            candidate = getattr(mod, attribute)
            if isinstance(candidate, celery_cls):
                return candidate, f"{mod_name}:{attribute}"
            searched.append(f"{where} ({_kind(candidate)})")
        for attribute, candidate in vars(mod).items():
            if isinstance(candidate, celery_cls):
                return candidate, f"{mod_name}:{attribute}"
        searched.append(f"any Celery app in {mod_name} (none)")
        return None

    found = look(module, name)
    if found is not None:
        return found
    submodule_name = f"{name}.celery"
    if getattr(module, "__path__", None) is not None:
        try:
            submodule = _import(submodule_name, app_name)
        except _Missing:
            searched.append(f"submodule {submodule_name} (absent)")
        else:
            found = look(submodule, submodule_name)
            if found is not None:
                return found
    else:
        searched.append(f"submodule {submodule_name} ({name} is not a package)")
    raise CliError(
        f"no Celery app found by -A {app_name}: searched {', '.join(searched)}", ExitCode.CONFIG
    )


def _url_setting(value: Any) -> str | None:
    """A ``broker_url`` value as one kombu URL (lists are failover URLs)."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value) or None
    return str(value)


def settings_from_app(app_name: str, environ: Mapping[str, str] | None = None) -> BrokerSettings:
    """Broker settings and exchange names of the Celery app ``-A app_name``.

    The URL is the app's own ``broker_url`` (else ``broker_read_url``, else
    ``broker_write_url``: wkctl uses one connection for both directions),
    read from the app's configuration without Celery's environment
    overrides, so that wkctl's documented order (``--broker``,
    ``WKCTL_BROKER_URL``, the app, ``CELERY_BROKER_URL``...) holds.  An app
    that sets no broker lends its names only when ``CELERY_BROKER_URL`` is
    set (Celery would use that too), else Celery's default broker for it.

    ``event_serializer`` is checked: wkctl reads JSON events only, so an app
    publishing events in another format gets a warning on stderr.
    """
    env = os.environ if environ is None else environ
    app, where = find_app(app_name)
    try:
        conf = app.conf
        raw_url = (
            _url_setting(conf.get("broker_url"))
            or _url_setting(conf.get("broker_read_url"))
            or _url_setting(conf.get("broker_write_url"))
        )
        if raw_url is None and not env.get("CELERY_BROKER_URL"):
            raw_url = app.connection_for_read().as_uri(include_password=True)
            source = f"app {where} (Celery's default broker)"
        else:
            source = f"app {where}"
        options = conf.get("broker_transport_options") or {}
        ssl = conf.get("broker_use_ssl")
        names = names_from_conf(conf)
        serializer = conf.get("event_serializer") or "json"
    except CliError:
        raise
    except Exception as exc:
        raise CliError(
            f"cannot read the configuration of app {where}: {_describe(exc)}", ExitCode.CONFIG
        ) from None
    if not isinstance(options, Mapping):
        raise CliError(
            f"app {where}: broker_transport_options must be a mapping, got {options!r}",
            ExitCode.CONFIG,
        )
    if ssl is not None and not isinstance(ssl, (bool, Mapping)):
        raise CliError(
            f"app {where}: broker_use_ssl must be a boolean or a mapping, got {ssl!r}",
            ExitCode.CONFIG,
        )
    if str(serializer).lower() not in ("json", "application/json"):
        click.echo(
            f"wkctl: warning: app {where} sets event_serializer={serializer!r}; wkctl reads "
            "JSON events only and will refuse its workers' events (set event_serializer='json')",
            err=True,
        )
    return BrokerSettings(
        url=raw_url or "",
        transport_options=dict(options),
        ssl=ssl if ssl else None,
        names=names,
        source=source,
    )
