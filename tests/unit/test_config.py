"""Broker resolution order, config file errors, credential masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from wkctl.cli.config import Config, find_config_file, load_config, resolve_broker
from wkctl.cli.errors import CliError, ExitCode
from wkctl.protocol.broker import embedded_broker_dir, mask_url

CFG_URL = "redis://127.0.0.1:6379/3"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wkctl.yaml"
    path.write_text(text)
    return path


def test_resolution_order_each_source_wins_over_the_next(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"broker_url: {CFG_URL}\n"))
    env = {"WKCTL_BROKER_URL": "amqp://a:pw@h1//", "CELERY_BROKER_URL": "amqp://b:pw@h2//"}
    assert resolve_broker("amqp://c:pw@h0//", config, env).url == "amqp://c:pw@h0//"
    assert resolve_broker(None, config, env).source == "WKCTL_BROKER_URL"
    env.pop("WKCTL_BROKER_URL")
    chosen = resolve_broker(None, config, env)
    assert (chosen.url, chosen.source) == ("amqp://b:pw@h2//", "CELERY_BROKER_URL")
    env.pop("CELERY_BROKER_URL")
    chosen = resolve_broker(None, config, env)
    assert chosen.url == CFG_URL and chosen.source.startswith("config file")
    chosen = resolve_broker(None, Config(), {})
    assert chosen.url == "filesystem://" and chosen.source == "embedded default"


def test_embedded_default_lives_in_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    settings = resolve_broker(None, Config(), {})
    assert embedded_broker_dir() == tmp_path / "wkctl" / "broker"
    assert settings.transport_options["data_folder_in"].startswith(
        str(tmp_path / "wkctl" / "broker")
    )
    assert settings.transport_options["polling_interval"] <= 0.05
    conn = settings.connection()
    conn.release()
    assert (tmp_path / "wkctl" / "broker" / "control").is_dir()


def test_transport_options_from_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"broker_url: {CFG_URL}\nbroker_transport_options:\n  global_keyprefix: 'team-a:'\n  fanout_prefix: true\n"
        "control_exchange: ops\nevent_exchange: opsev\ntimeout: 2.5\noutput: json\n",
    )
    config = load_config(path)
    settings = resolve_broker(None, config, {})
    assert settings.transport_options == {"global_keyprefix": "team-a:", "fanout_prefix": True}
    assert settings.names.pidbox_exchange == "ops.pidbox"
    assert settings.names.event_exchange == "opsev"
    assert config.timeout == 2.5 and config.output == "json"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("brokr_url: amqp://x//\n", "unknown key 'brokr_url'"),
        ("timeout: soon\n", "key 'timeout' must be a positive number, got 'soon'"),
        ("broker_transport_options: [1, 2]\n", "key 'broker_transport_options' must be a mapping"),
        ("output: xml\n", "key 'output' must be one of text, json, yaml"),
        ("limits:\n  max_body: 3\n", "unknown key 'limits.max_body'"),
        ("limits:\n  max_depth: -1\n", "key 'limits.max_depth' must be a positive integer"),
        ("- just\n- a list\n", "expected a mapping of settings, got list"),
        ("broker_url: [unclosed\n", "invalid YAML"),
    ],
)
def test_config_errors_name_the_key_and_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CliError) as info:
        load_config(path)
    assert needle in info.value.message
    assert str(path) in info.value.message
    assert info.value.exit_code == ExitCode.CONFIG


def test_config_file_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert find_config_file() is None
    user = tmp_path / "xdg" / "wkctl" / "config.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("timeout: 3\n")
    assert find_config_file() == user
    local = write(tmp_path, "timeout: 4\n")
    assert find_config_file() == Path("wkctl.yaml") and local.exists()
    assert find_config_file("other.yaml") == Path("other.yaml")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@host//", "amqp://guest:**@host//"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:**@127.0.0.1:6379/0"),
        ("amqps://user:p%40ss@mq.example:5671/vh", "amqps://user:**@mq.example:5671/vh"),
        ("filesystem://", "filesystem://"),
    ],
)
def test_mask_url_like_celery(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "needle", "code"),
    [
        ("localhost:5672", "malformed broker URL 'localhost:5672' from --broker", ExitCode.BROKER),
        ("kafka://h:9092", "unknown broker transport 'kafka' from --broker", ExitCode.BROKER),
    ],
)
def test_bad_urls(url: str, needle: str, code: int) -> None:
    with pytest.raises(CliError) as info:
        resolve_broker(url, Config(), {})
    assert needle in info.value.message and info.value.exit_code == code


def test_redis_connections_poll_without_sleeping() -> None:
    """kombu sleeps ``polling_interval`` after every poll that delivered
    nothing; wkctl shortens BRPOP (fast exits) without that 50 ms stall."""
    from wkctl.protocol.broker import REDIS_BRPOP_TIMEOUT, BrokerSettings

    conn = BrokerSettings(url="redis://127.0.0.1:1/0").connection()
    assert conn.transport.polling_interval is None
    assert conn.transport.brpop_timeout == REDIS_BRPOP_TIMEOUT
    assert "polling_interval" not in conn.transport_options
    # kept when kombu builds the transport again (failover, ensure(), clone())
    conn._transport = None
    assert conn.transport.brpop_timeout == REDIS_BRPOP_TIMEOUT
    assert conn.clone().transport.polling_interval is None
    # a user's own setting wins, as kombu applies it
    own = BrokerSettings(url="redis://127.0.0.1:1/0", transport_options={"polling_interval": 0.2})
    assert own.connection().transport.polling_interval == 0.2
    # other transports are left alone
    amqp = BrokerSettings(url="amqp://guest:guest@127.0.0.1:1//").connection()
    assert "polling_interval" not in amqp.transport_options


def test_ack_window_acknowledges_per_half_window_and_when_flushed() -> None:
    """One ``multiple=True`` frame per half window; the rest on flush; a
    reset (new channel) forgets the old channel's tags."""
    from wkctl.protocol.broker import AckWindow

    class Channel:
        def __init__(self) -> None:
            self.acks: list[tuple[int, bool]] = []

        def basic_ack(self, tag: int, multiple: bool = False) -> None:
            self.acks.append((tag, multiple))

    channel = Channel()
    window = AckWindow(10)
    for tag in range(1, 13):
        window.taken(channel, tag)
    assert channel.acks == [(5, True), (10, True)] and window.pending == 2
    window.flush(channel)
    assert channel.acks[-1] == (12, True) and window.pending == 0 and window.tag is None
    window.flush(channel)  # nothing pending: no frame
    assert len(channel.acks) == 3
    window.taken(channel, 13)
    window.reset()
    window.flush(channel)
    assert len(channel.acks) == 3
