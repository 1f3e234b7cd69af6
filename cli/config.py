"""Configuration: the YAML config file and where the broker comes from.

Celery users configure a broker with ``broker_url`` and friends; the config
file uses the same key names so that a Celery setting can be copied over
as it is.  The broker is resolved in one documented order (README:
Configuration) so that a user can always tell which one wkctl will use.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wkctl.protocol.broker import BrokerSettings, embedded_settings, transport_of
from wkctl.protocol.wire import Limits, Names

from .errors import CliError, ExitCode

__all__ = [
    "Config",
    "parse_transport_option",
    "parse_transport_options",
    "find_config_file",
    "load_config",
    "resolve_broker",
    "KNOWN_TRANSPORTS",
]

OUTPUT_FORMATS = ("text", "json", "yaml")

#: Transports wkctl has been tested with; kombu knows more, and an unknown
#: scheme is reported before any connection attempt.
KNOWN_TRANSPORTS = frozenset(
    {
        "amqp",
        "amqps",
        "pyamqp",
        "librabbitmq",
        "redis",
        "rediss",
        "sentinel",
        "filesystem",
        "memory",
    }
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# key -> (description of the expected type, check)
_KEYS: dict[str, tuple[str, Any]] = {
    "broker_url": ("a string", lambda v: isinstance(v, str)),
    "broker_transport_options": ("a mapping", lambda v: isinstance(v, dict)),
    "broker_use_ssl": ("a boolean or a mapping", lambda v: isinstance(v, (bool, dict))),
    "broker_connection_timeout": ("a number", _is_number),
    "control_exchange": ("a string", lambda v: isinstance(v, str) and v != ""),
    "event_exchange": ("a string", lambda v: isinstance(v, str) and v != ""),
    "event_queue_prefix": ("a string", lambda v: isinstance(v, str) and v != ""),
    "timeout": ("a positive number", lambda v: _is_number(v) and v > 0),
    "output": (f"one of {', '.join(OUTPUT_FORMATS)}", lambda v: v in OUTPUT_FORMATS),
    "limits": ("a mapping", lambda v: isinstance(v, dict)),
}

_LIMIT_KEYS = {name for name in Limits.__dataclass_fields__ if name != "extra"}


@dataclass(frozen=True)
class Config:
    """The settings of one config file (all optional)."""

    path: Path | None = None
    broker_url: str | None = None
    broker_transport_options: Mapping[str, Any] = field(default_factory=dict)
    broker_use_ssl: bool | Mapping[str, Any] | None = None
    broker_connection_timeout: float = 4.0
    control_exchange: str = "celery"
    event_exchange: str = "celeryev"
    event_queue_prefix: str = "celeryev"
    timeout: float = 1.0
    output: str = "text"
    limits: Limits = field(default_factory=Limits)

    @property
    def names(self) -> Names:
        return Names(
            control_exchange=self.control_exchange,
            event_exchange=self.event_exchange,
            event_queue_prefix=self.event_queue_prefix,
        )


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """``--config PATH``, else ``./wkctl.yaml``, else ``$XDG_CONFIG_HOME/wkctl/config.yaml``."""
    if explicit is not None:
        return Path(explicit)
    local = Path("wkctl.yaml")
    if local.is_file():
        return local
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    user = Path(base) / "wkctl" / "config.yaml"
    return user if user.is_file() else None


def load_config(path: Path | None) -> Config:
    """Read and check a config file; every problem names the key and the file."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(
            f"cannot read config file {path}: {exc.strerror or exc}", ExitCode.CONFIG
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CliError(
            f"config file {path}{where}: invalid YAML: {problem}", ExitCode.CONFIG
        ) from None
    if data is None:
        return Config(path=path)
    if not isinstance(data, dict):
        raise CliError(
            f"config file {path}: expected a mapping of settings, got {type(data).__name__}",
            ExitCode.CONFIG,
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise CliError(
                f"config file {path}: unknown key {key!r} (known keys: {known})", ExitCode.CONFIG
            )
        expected, check = _KEYS[key]
        if not check(value):
            raise CliError(
                f"config file {path}: key {key!r} must be {expected}, got {value!r}",
                ExitCode.CONFIG,
            )
        values[key] = value
    if "limits" in values:
        limits = values["limits"]
        for key, value in limits.items():
            if key not in _LIMIT_KEYS:
                known = ", ".join(sorted(_LIMIT_KEYS))
                raise CliError(
                    f"config file {path}: unknown key 'limits.{key}' (known keys: {known})",
                    ExitCode.CONFIG,
                )
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise CliError(
                    f"config file {path}: key 'limits.{key}' must be a positive integer, got {value!r}",
                    ExitCode.CONFIG,
                )
        values["limits"] = Limits(**limits)
    if "broker_connection_timeout" in values:
        values["broker_connection_timeout"] = float(values["broker_connection_timeout"])
    return Config(path=path, **values)


def _check_url(url: str, source: str) -> None:
    if "://" not in url:
        raise CliError(
            f"malformed broker URL {url!r} from {source}: expected transport://[user:password@]host[:port]/[vhost]",
            ExitCode.BROKER,
        )
    transport = transport_of(url)
    if transport not in KNOWN_TRANSPORTS:
        raise CliError(
            f"unknown broker transport {transport!r} from {source} "
            f"(supported: {', '.join(sorted(KNOWN_TRANSPORTS))})",
            ExitCode.BROKER,
        )


def parse_transport_option(text: str) -> tuple[str, Any]:
    """One ``--broker-transport-option KEY=VALUE``, read as Celery's tools read
    it (prometheus-exporter-celery): digits are an int, valid JSON is decoded
    (``true``, ``{"a": 1}``, ``"quoted"``), anything else is the string itself."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CliError(
            f"--broker-transport-option: expected KEY=VALUE (e.g. master_name=mymaster), got {text!r}",
            ExitCode.USAGE,
        )
    if value.isnumeric():
        return key, int(value)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def parse_transport_options(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Every ``--broker-transport-option`` given, the last one of a key winning."""
    return dict(parse_transport_option(item) for item in items)


def resolve_broker(
    cli_url: str | None,
    config: Config,
    environ: Mapping[str, str] | None = None,
    app_settings: BrokerSettings | None = None,
    transport_options: Mapping[str, Any] | None = None,
) -> BrokerSettings:
    """Pick the broker in the documented order.

    ``--broker``, ``WKCTL_BROKER_URL``, the ``-A`` app, ``CELERY_BROKER_URL``,
    the config file, then the embedded filesystem broker.  Transport options
    and TLS settings come from the same place as the URL where that place has
    them (the app, the config file), else from the config file;
    ``transport_options`` (``--broker-transport-option``) go over them.
    """
    env = os.environ if environ is None else environ
    names = app_settings.names if app_settings is not None else config.names
    candidates: list[tuple[str | None, str]] = [
        (cli_url, "--broker"),
        (env.get("WKCTL_BROKER_URL") or None, "WKCTL_BROKER_URL"),
        (
            app_settings.url if app_settings is not None else None,
            app_settings.source if app_settings else "",
        ),
        (env.get("CELERY_BROKER_URL") or None, "CELERY_BROKER_URL"),
        (config.broker_url, f"config file {config.path}"),
    ]
    for url, source in candidates:
        if not url:
            continue
        _check_url(url, source)
        from_app = (
            app_settings if app_settings is not None and source == app_settings.source else None
        )
        options = dict(from_app.transport_options if from_app else config.broker_transport_options)
        options.update(transport_options or {})
        ssl = from_app.ssl if from_app is not None else config.broker_use_ssl
        return BrokerSettings(
            url=url,
            transport_options=options,
            ssl=ssl,
            names=names,
            source=source,
            connect_timeout=config.broker_connection_timeout,
        )
    embedded = embedded_settings(names=names)
    if transport_options:
        merged = {**embedded.transport_options, **transport_options}
        return dataclasses.replace(embedded, transport_options=merged)
    return embedded
