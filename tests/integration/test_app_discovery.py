"""``wkctl -A/--app``: finding a Celery app the way ``celery -A`` does, and
using its broker and exchange names end to end.

The test projects live in ``tests/data/apps`` (one package per layout, see
its README); every app has its own ``control_exchange`` so that a test can
tell which one was found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from support.workers import HERE as HARNESS
from wkctl.cli.app import find_app, settings_from_app
from wkctl.cli.context import AppContext
from wkctl.cli.errors import CliError, ExitCode

HERE = Path(__file__).resolve().parents[1]
APPS = HERE / "data" / "apps"
SUPPORT = HARNESS  # where celeryapp, the module the workers run, lives

# (-A value, where it is found, its control_exchange)
LAYOUTS = [
    ("wkapp_attr_app", "wkapp_attr_app:app", "ctl_attr_app"),
    ("wkapp_attr_celery", "wkapp_attr_celery:celery", "ctl_attr_celery"),
    ("wkapp_attr_any", "wkapp_attr_any:my_celery_app", "ctl_attr_any"),
    ("wkapp_sub_app", "wkapp_sub_app.celery:app", "ctl_sub_app"),
    ("wkapp_sub_celery", "wkapp_sub_celery.celery:celery", "ctl_sub_celery"),
    ("wkapp_sub_any", "wkapp_sub_any.celery:worker_app", "ctl_sub_any"),
]


@pytest.fixture
def apps_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The test projects importable; no broker settings leaking in from outside."""
    monkeypatch.syspath_prepend(str(APPS))
    for var in ("WKCTL_BROKER_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def wkctl_env(tmp_path: Path, pythonpath: list[Path], **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WKCTL_BROKER_URL", "CELERY_BROKER_URL", "PYTHONPATH")
        and not k.startswith("WKCTL_TEST_")
    }
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_wkctl(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wkctl", *args],
        env=env,
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- discovery, in process -------------------------------------------------


@pytest.mark.parametrize(("name", "where", "control_exchange"), LAYOUTS)
def test_each_layout_is_found_in_celerys_order(
    apps_on_path: None, name: str, where: str, control_exchange: str
) -> None:
    app, found = find_app(name)
    assert found == where
    assert app.conf.control_exchange == control_exchange
    settings = settings_from_app(name)
    assert settings.names.control_exchange == control_exchange
    assert settings.source == f"app {where}"


@pytest.mark.parametrize(
    ("name", "where"),
    [
        # Celery's Django layout: proj.celery is the submodule, the package
        # re-exports the app under another name.
        ("wkapp_django", "wkapp_django:celery_app"),
        # A non-Celery ``app`` (a web app) is skipped, the Celery ``celery`` found.
        ("wkapp_flask", "wkapp_flask:celery"),
        # Explicit forms: module:attribute, dotted attribute, dotted module.
        ("wkapp_sub_app.celery:app", "wkapp_sub_app.celery:app"),
        ("wkapp_sub_app.celery.app", "wkapp_sub_app.celery:app"),
        ("wkapp_sub_app.celery", "wkapp_sub_app.celery:app"),
        ("wkapp_attr_any:my_celery_app", "wkapp_attr_any:my_celery_app"),
    ],
)
def test_other_forms(apps_on_path: None, name: str, where: str) -> None:
    assert find_app(name)[1] == where


def test_every_setting_is_taken_from_the_app(apps_on_path: None) -> None:
    settings = settings_from_app("wkapp_attr_app")
    assert settings.url == "redis://127.0.0.1:6379/7"
    assert dict(settings.transport_options) == {"visibility_timeout": 10}
    assert settings.ssl is None
    names = settings.names
    assert (names.control_exchange, names.event_exchange, names.event_queue_prefix) == (
        "ctl_attr_app",
        "ev_attr_app",
        "evq_attr_app",
    )
    assert (names.event_queue_ttl, names.event_queue_expires) == (7.0, 90.0)
    assert (names.control_queue_ttl, names.control_queue_expires) == (30.0, 20.0)
    # derived names follow Celery/kombu
    assert names.pidbox_exchange == "ctl_attr_app.pidbox"
    assert names.reply_exchange == "reply.ctl_attr_app.pidbox"


def test_read_url_tls_options_and_a_serializer_wkctl_cannot_read(
    apps_on_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_from_app("wkapp_options")
    # One connection serves both directions: the read URL when no broker_url.
    assert settings.url == "amqps://guest:guest@broker.example:5671//read"
    assert settings.ssl == {"cert_reqs": 2, "ca_certs": "/etc/ssl/ca.pem"}
    err = capsys.readouterr().err
    assert "event_serializer='pickle'" in err and "JSON events only" in err
    assert len(err.strip().splitlines()) == 1


def test_an_app_without_broker_uses_celerys_default_or_celery_broker_url(
    apps_on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from_app("wkapp_nobroker")
    assert settings.url == "amqp://guest:guest@localhost:5672//"
    assert settings.source == "app wkapp_nobroker:app (Celery's default broker)"
    # As for Celery, CELERY_BROKER_URL then says where the broker is; the
    # app still names the exchanges.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/5")
    ctx = AppContext(app_name="wkapp_nobroker")
    assert (ctx.settings.url, ctx.settings.source) == (
        "redis://127.0.0.1:6379/5",
        "CELERY_BROKER_URL",
    )
    assert ctx.settings.names.control_exchange == "ctl_nobroker"


def test_app_url_read_without_celerys_environment_override(
    apps_on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's ``conf.broker_url`` returns CELERY_BROKER_URL when set; wkctl
    documents the app *before* CELERY_BROKER_URL, so it reads the app's own value."""
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//other")
    ctx = AppContext(app_name="wkapp_attr_app")
    assert ctx.settings.url == "redis://127.0.0.1:6379/7"
    assert ctx.settings.source == "app wkapp_attr_app:app"


def test_broker_option_and_environment_win_over_the_app_but_names_stay(
    apps_on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "amqp://guest:guest@127.0.0.1:5672//elsewhere"
    ctx = AppContext(app_name="wkapp_attr_app", broker_url=url)
    assert (ctx.settings.url, ctx.settings.source) == (url, "--broker")
    assert ctx.settings.names.control_exchange == "ctl_attr_app"

    monkeypatch.setenv("WKCTL_BROKER_URL", "redis://127.0.0.1:6379/9")
    ctx = AppContext(app_name="wkapp_attr_app")
    assert (ctx.settings.url, ctx.settings.source) == (
        "redis://127.0.0.1:6379/9",
        "WKCTL_BROKER_URL",
    )
    assert ctx.settings.names.event_exchange == "ev_attr_app"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "wkapp_broken_import",
            "cannot import wkapp_broken_import (from -A wkapp_broken_import): "
            "ModuleNotFoundError: No module named 'wkapp_no_such_dependency'",
        ),
        (
            "wkapp_raises",
            "cannot import wkapp_raises (from -A wkapp_raises): RuntimeError: DATABASE_URL is not set",
        ),
        (
            "wkapp_noapp",
            "no Celery app found by -A wkapp_noapp: searched wkapp_noapp.app (absent), "
            "wkapp_noapp.celery (absent), any Celery app in wkapp_noapp (none), "
            "submodule wkapp_noapp.celery (absent)",
        ),
        (
            "wkapp_notapp",
            "no Celery app found by -A wkapp_notapp: searched wkapp_notapp.app (an int), "
            "wkapp_notapp.celery (absent), any Celery app in wkapp_notapp (none), "
            "submodule wkapp_notapp.celery (absent)",
        ),
        ("wkapp_notapp:app", "wkapp_notapp:app is not a Celery app (it is an int)"),
        ("wkapp_noapp.VERSION", "wkapp_noapp:VERSION is not a Celery app (it is a str)"),
        (
            "wkapp_attr_app:nope",
            "module wkapp_attr_app has no attribute 'nope' (from -A wkapp_attr_app:nope)",
        ),
        (
            "wkapp_does_not_exist",
            "cannot import wkapp_does_not_exist (from -A wkapp_does_not_exist): no module "
            "named 'wkapp_does_not_exist' (is it in the current directory or on PYTHONPATH?)",
        ),
        (
            "wkapp_badconf",
            "cannot read the configuration of app wkapp_badconf:app: "
            "ModuleNotFoundError: No module named 'wkapp_no_such_settings_module'",
        ),
    ],
)
def test_errors_say_what_was_wrong(apps_on_path: None, name: str, expected: str) -> None:
    with pytest.raises(CliError) as info:
        settings_from_app(name)
    assert info.value.exit_code == ExitCode.CONFIG
    assert info.value.message == expected


# -- the command line --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("wkapp_broken_import", "No module named 'wkapp_no_such_dependency'"),
        ("wkapp_raises", "RuntimeError: DATABASE_URL is not set"),
        ("wkapp_noapp", "searched wkapp_noapp.app (absent)"),
        ("wkapp_notapp:app", "is not a Celery app (it is an int)"),
    ],
)
def test_cli_errors_are_one_line_exit_3(tmp_path: Path, name: str, fragment: str) -> None:
    # cwd = the projects folder and no PYTHONPATH for them: like ``celery -A``,
    # wkctl imports from the current directory.
    result = run_wkctl(["-A", name, "hello", "--timeout", "0.2"], wkctl_env(tmp_path, []), APPS)
    assert result.returncode == ExitCode.CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wkctl: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_app_option_without_celery_says_how_to_install(tmp_path: Path) -> None:
    # The one place a stand-in is used: Celery cannot be uninstalled from the
    # test environment, so a folder whose ``celery`` module fails to import
    # comes first on the import path, which is what Python sees when Celery
    # is not installed.
    shim = tmp_path / "no_celery"
    shim.mkdir()
    (shim / "celery.py").write_text(
        'raise ImportError("No module named \'celery\'", name="celery")\n'
    )
    result = run_wkctl(
        ["-A", "wkapp_attr_app", "hello", "--timeout", "0.2"],
        wkctl_env(tmp_path, [shim, APPS]),
        tmp_path,
    )
    assert result.returncode == ExitCode.CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "needs Celery" in lines[0]
    assert "pip install 'wkctl[celery]'" in lines[0]
    assert "Traceback" not in result.stderr


def test_commands_without_app_never_import_celery(tmp_path: Path) -> None:
    """Celery is an optional extra: nothing but ``-A`` may need it."""
    code = (
        "import sys; import wkctl.cli.main, wkctl.cli.context, wkctl.cli.app, wkctl.protocol; "
        "import wkctl.protocol.bootsteps; "
        "print('celery' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "False"


# -- end to end: the app's exchange names reach real Celery workers ----------


@pytest.mark.broker
@pytest.mark.celery
def test_hello_and_clock_reach_workers_on_the_apps_custom_exchanges(
    broker_url: str, celery_workers, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    exchanges = {
        "WKCTL_TEST_CONTROL_EXCHANGE": f"ctl_{tag}",
        "WKCTL_TEST_EVENT_EXCHANGE": f"ev_{tag}",
    }
    (worker,) = celery_workers(broker_url, n=1, env=exchanges)
    # wkctl imports the very app module the worker runs (bench/harness/celeryapp.py
    # through wkapp_e2e.celery), configured by the same environment.
    env = wkctl_env(tmp_path, [APPS, SUPPORT], WKCTL_TEST_BROKER_URL=broker_url, **exchanges)

    hello = run_wkctl(
        ["-v", "-A", "wkapp_e2e", "hello", "--expect", "1", "--timeout", "5", "--json"],
        env,
        tmp_path,
    )
    assert hello.returncode == 0, hello.stderr
    assert "(from app wkapp_e2e.celery:app)" in hello.stderr
    replies = json.loads(hello.stdout)
    assert worker.hostname in replies
    assert isinstance(replies[worker.hostname]["clock"], int)

    clock = run_wkctl(
        ["-A", "wkapp_e2e", "clock", "--expect", "1", "--timeout", "5", "--json"], env, tmp_path
    )
    assert clock.returncode == 0, clock.stderr
    assert worker.hostname in json.loads(clock.stdout)

    # A reference node started with the app joins the worker's cluster: its
    # Mingle hello reaches the worker, and it answers hello next to it.
    node_name = f"app-node-{tag}@wkctl-test"
    node = subprocess.Popen(
        [sys.executable, "-m", "wkctl", "-A", "wkapp_e2e", "node", "--name", node_name],
        env=env,
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.wait_log(f"sync with {node_name}", 15), worker.log_text()[-2000:]
        both = run_wkctl(
            ["-A", "wkapp_e2e", "hello", "--expect", "2", "--timeout", "5", "--json"],
            env,
            tmp_path,
        )
        assert both.returncode == 0, both.stderr
        assert {worker.hostname, node_name} <= set(json.loads(both.stdout))
    finally:
        node.terminate()
        _, node_err = node.communicate(timeout=15)
    assert node.returncode == 0, node_err

    # Control: the same broker with Celery's default exchange names reaches
    # nobody, so it is the app's names that made the difference.
    # (Other nodes may share a Redis database with this test when suites run
    # in parallel, so the check is that *our* worker stays silent.)
    plain = run_wkctl(
        ["--broker", broker_url, "hello", "--timeout", "0.5", "--json"],
        wkctl_env(tmp_path, []),
        tmp_path,
    )
    assert plain.returncode in (0, ExitCode.FAILURE), plain.stderr
    assert worker.hostname not in (json.loads(plain.stdout) if plain.stdout.strip() else {})

    # --broker wins over the app, the app's names still apply: the worker answers.
    winner = run_wkctl(
        ["-v", "--broker", broker_url, "-A", "wkapp_e2e", "hello", "--expect", "1", "--json"],
        dict(env, WKCTL_TEST_BROKER_URL="amqp://guest:guest@127.0.0.1:1//nowhere"),
        tmp_path,
    )
    assert winner.returncode == 0, winner.stderr
    assert "(from --broker)" in winner.stderr
    assert worker.hostname in json.loads(winner.stdout)
