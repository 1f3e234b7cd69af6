"""What every command gets from the ``wkctl`` group: settings, output, logging.

Commands stay thin: they take an :class:`AppContext` (``@pass_app``), ask it
for the broker settings or a live connection, call the library, and render.
Resolution is lazy so that commands which need no broker (``validate``,
``schema``) never fail on a broken broker configuration.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import click
from kombu import Connection

from wkctl.protocol.broker import BrokerSettings

from .config import Config, find_config_file, load_config, resolve_broker
from .errors import CliError, ExitCode

__all__ = ["AppContext", "pass_app", "connect"]


@dataclass
class AppContext:
    broker_url: str | None = None
    config_path: str | None = None
    app_name: str | None = None
    verbose: int = 0
    debug: bool = False
    #: --broker-transport-option KEY=VALUE, over the resolved source's options
    transport_options: dict[str, Any] = field(default_factory=dict)
    _config: Config | None = field(default=None, repr=False)
    _settings: BrokerSettings | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(find_config_file(self.config_path))
        return self._config

    @property
    def settings(self) -> BrokerSettings:
        """The broker to use, resolved once (README: Configuration)."""
        if self._settings is None:
            app_settings = None
            if self.app_name:
                from .app import settings_from_app

                app_settings = settings_from_app(self.app_name)
            self._settings = resolve_broker(
                self.broker_url,
                self.config,
                app_settings=app_settings,
                transport_options=self.transport_options,
            )
            self.log(f"broker: {self._settings.masked_url} (from {self._settings.source})")
        return self._settings

    def add_transport_options(self, extra: dict[str, Any]) -> None:
        """Lay options from the command line (``--broker-transport-option``)
        over the transport options of the resolved settings."""
        settings = self.settings
        self._settings = dataclasses.replace(
            settings, transport_options={**settings.transport_options, **extra}
        )

    def default_timeout(self, value: float | None) -> float:
        return self.config.timeout if value is None else value

    def output_format(self, json_flag: bool = False, yaml_flag: bool = False) -> str:
        if json_flag:
            return "json"
        if yaml_flag:
            return "yaml"
        return self.config.output

    def log(self, message: str, level: int = 1) -> None:
        """A diagnostic line on stderr, shown with ``-v`` (or ``-vv`` for level 2)."""
        if self.verbose >= level:
            click.echo(f"wkctl: {message}", err=True)

    def connect(self, settings: BrokerSettings | None = None) -> Connection:
        return connect(settings or self.settings)

    def setup_logging(self) -> None:
        level = (
            logging.DEBUG
            if self.debug or self.verbose >= 2
            else logging.INFO
            if self.verbose
            else logging.WARNING
        )
        logging.basicConfig(
            level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


pass_app = click.make_pass_decorator(AppContext, ensure=True)


#: What the broker said -> what to tell the user: the broker answered, so
#: "is it running?" would send them looking in the wrong place.
_REFUSALS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("ACCESS_REFUSED", "WRONGPASS", "NOAUTH", "invalid username-password", "AUTH failed"),
        "the broker refused the credentials: check the user name and password in the URL;",
    ),
    (
        ("NOT_ALLOWED",),
        "the broker refused the virtual host: check that it exists and that the user may "
        "use it, the URL's path names it, amqp://host// is the default vhost '/';",
    ),
    (
        ("DB index is out of range",),
        "the Redis database number in the URL does not exist on this server;",
    ),
)


def broker_hint(reason: str) -> str:
    """The advice that fits a connection failure's reason."""
    for markers, hint in _REFUSALS:
        if any(marker in reason for marker in markers):
            return hint
    return "is it running?"


def broker_error(settings: BrokerSettings, exc: BaseException) -> CliError:
    """The one-line message for a broker that cannot be reached or refused us."""
    reason = str(exc).strip() or type(exc).__name__
    # Some client libraries echo the URL back: never let a password through.
    if settings.url in reason:
        reason = reason.replace(settings.url, settings.masked_url)
    return CliError(
        f"cannot connect to broker {settings.masked_url}: {reason} "
        f"({broker_hint(reason)} choose another with --broker, WKCTL_BROKER_URL "
        "or broker_url in wkctl.yaml)",
        ExitCode.BROKER,
    )


def connect(settings: BrokerSettings, max_retries: int = 0) -> Connection:
    """A connected kombu connection, or a :class:`CliError` naming the masked broker."""
    conn = settings.connection()
    try:
        conn.ensure_connection(
            max_retries=max_retries + settings.failover_retries,
            interval_start=0.2,
            interval_step=0.5,
            timeout=settings.connect_timeout,
        )
    except Exception as exc:  # kombu raises many types here; all mean "unreachable"
        try:
            conn.release()
        except Exception:
            pass
        raise broker_error(settings, exc) from None
    return conn


def die(message: str, code: int = ExitCode.FAILURE) -> Any:
    raise CliError(message, code)
