"""Security: JSON only, bounded input, clock poisoning, TLS, no leaked credentials.

Threat model (the spec's security section): any process with broker access
can publish anything on the pidbox, reply and event exchanges.  These tests
play that process against real wkctl processes on real brokers:

* pickle, YAML and msgpack payloads are refused unread by every consumer
  (node pidbox, node events, node Mingle replies, ``tail``, ``dump``); the
  pickle and YAML payloads would create a file when deserialized (a control
  run proves it) and the file never appears;
* a forged absurd clock cannot poison other nodes (the spec's rule: during
  the initial Mingle sync nothing above ``2**53-1`` is adopted; after it,
  nothing more than ``max_clock_jump`` above the current value);
* the ``limits:`` of the config file are applied;
* ``amqps://`` (through stunnel in front of RabbitMQ) and ``rediss://``
  (Redis's own TLS port) work with ``broker_use_ssl`` from the config file;
  skipped with the reason where ``openssl``/``stunnel``/a TLS-enabled
  ``redis-server`` are missing;
* a password in the broker URL never shows in any output: logs, errors,
  ``--json`` output, ``-v``/``--debug`` traces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from kombu import Connection

from support.brokerproc import RedisProc, free_port
from support.cliproc import interrupt, start_dump, start_tail, wkctl_popen
from support.hostile import heartbeat as full_heartbeat
from support.hostile import hostile_payloads
from support.hostile import publish_raw as _publish_raw
from support.nodes import NodeProcess, hosted_nodes, unique_name
from support.workers import _die_with_parent
from wkctl.protocol.broker import event_exchange, pidbox_exchange, reply_exchange, transport_of
from wkctl.protocol.client import Client
from wkctl.protocol.clock import MAX_SAFE_CLOCK
from wkctl.protocol.wire import Names, pidbox_request

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
NAMES = Names()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    child = dict(os.environ)
    for key in ("WKCTL_BROKER_URL", "CELERY_BROKER_URL"):
        child.pop(key, None)
    child.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "wkctl", *args],
        capture_output=True,
        text=True,
        env=child,
        cwd=str(REPO),
        timeout=timeout,
    )


def ping_names(url: str, timeout: float = 1.0, **conn: Any) -> set[str]:
    with Connection(url, **conn) as c, Client(c) as client:
        return set(client.ping(timeout=timeout).replies)


# -- payloads that run code when deserialized ---------------------------------------


def test_payloads_are_live(tmp_path: Path) -> None:
    """Control: deserializing the payloads really would run code."""
    payloads = hostile_payloads(tmp_path)
    code = (
        "import pickle, sys, yaml\n"
        "pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "yaml.unsafe_load(open(sys.argv[2]).read())\n"
    )
    (tmp_path / "p.bin").write_bytes(payloads["pickle"][0])
    (tmp_path / "y.yaml").write_bytes(payloads["yaml"][0])
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "p.bin"), str(tmp_path / "y.yaml")], check=True
    )
    assert (tmp_path / "pickle-ran").exists() and (tmp_path / "yaml-ran").exists()


def test_only_json_is_accepted_by_every_consumer(broker_url: str, tmp_path: Path) -> None:
    danger = tmp_path / "danger"
    danger.mkdir()
    payloads = hostile_payloads(danger)
    transport = transport_of(broker_url)
    tail = start_tail(["--broker", broker_url, "-v", "tail", "--json"], tmp_path)
    try:
        dump = start_dump(broker_url, tmp_path, 4)
        # a node still in its Mingle round, so that its reply consumer reads
        with hosted_nodes(
            broker_url,
            [unique_name("json")],
            wait=False,
            mingle_timeout=4.0,
            mingle_settle=4.0,
            heartbeat=0.5,
        ) as (handle,):
            assert handle.wait_for(lambda h: h.started.is_set() and h.node.mingle is not None, 10)
            ticket = handle.node.mingle.ticket  # type: ignore[union-attr]
            oid = handle.binding.oid
            time.sleep(1.0)  # dump subscribed
            with Connection(broker_url) as conn:
                for label, (body, ctype) in payloads.items():
                    _publish_raw(conn, pidbox_exchange(NAMES), "", body, ctype, {"clock": 1})
                    _publish_raw(
                        conn,
                        event_exchange(NAMES, transport),
                        "worker.heartbeat",
                        body,
                        ctype,
                        {"hostname": f"evil-{label}@attacker"},
                    )
                    _publish_raw(
                        conn,
                        reply_exchange(NAMES),
                        oid,
                        body,
                        ctype,
                        {"ticket": ticket, "clock": 1},
                    )
            assert handle.wait_synced(10)
            assert handle.name in ping_names(broker_url)
            with Connection(broker_url) as conn, Client(conn) as client:
                hello = client.hello(timeout=1.0)
            assert handle.name in hello.replies
            log = handle.log_text()
            assert "content type refused" in log, log[-2000:]
            assert "invalid JSON" in log or "undecodable body" in log, log[-2000:]
            assert "rejected hello reply" in log, log[-2000:]
            assert handle.binding.error is None
        dump.wait(30)
        assert dump.returncode == 0, (tmp_path / "dump.err").read_text()[-2000:]
        json.loads((tmp_path / "dump.out").read_text())
        assert "refused" in (tmp_path / "dump.err").read_text()
        assert tail.poll() is None, (tmp_path / "tail.err").read_text()[-2000:]
    finally:
        interrupt(tail)
    err = (tmp_path / "tail.err").read_text()
    assert "refused message: content type refused" in err, err[-2000:]
    assert "Traceback" not in err
    assert list(danger.iterdir()) == [], "a payload was deserialized"


# -- clock poisoning ------------------------------------------------------------------


def test_absurd_clock_from_a_peer_does_not_poison_other_nodes(broker_url: str) -> None:
    transport = transport_of(broker_url)
    with hosted_nodes(broker_url, [unique_name("clk"), unique_name("clk")], heartbeat=0.5) as (
        a,
        b,
    ):
        before = a.node.clock.value
        with Connection(broker_url) as conn:
            for clock in (2**62, 2**63 - 1, 2**70, -5, "9" * 30, 1e300):
                hb = full_heartbeat("forger@evil", clock)
                _publish_raw(
                    conn,
                    event_exchange(NAMES, transport),
                    "worker.heartbeat",
                    json.dumps(hb).encode(),
                    "application/json",
                    {"hostname": "forger@evil"},
                )
            _publish_raw(
                conn,
                pidbox_exchange(NAMES),
                "",
                json.dumps(
                    pidbox_request(
                        "ping",
                        {},
                        reply_exchange=NAMES.reply_exchange,
                        reply_routing_key="x",
                        ticket="t",
                    )
                ).encode(),
                "application/json",
                {"clock": 2**62},
            )
        time.sleep(1.5)
        for handle in (a, b):
            assert handle.node.clock.value < before + 10_000, handle.node.clock.value
            assert "ignored clock from forger@evil" in handle.log_text(), handle.log_text()[-1500:]
        # a plausible jump (within max_clock_jump) is still adopted: the rule is a bound, not a freeze
        target = a.node.clock.value + 5000
        with Connection(broker_url) as conn:
            hb = full_heartbeat("peer@ok", target)
            _publish_raw(
                conn,
                event_exchange(NAMES, transport),
                "worker.heartbeat",
                json.dumps(hb).encode(),
                "application/json",
                {"hostname": "peer@ok"},
            )
        assert a.wait_for(lambda h: h.node.clock.value > target, 5)

        # a new node syncing: a forged hello reply with a clock above 2**53-1 is not adopted
        with hosted_nodes(
            broker_url, [unique_name("new")], wait=False, mingle_timeout=3.0, mingle_settle=3.0
        ) as (c,):
            assert c.wait_for(lambda h: h.started.is_set() and h.node.mingle is not None, 10)
            ticket = c.node.mingle.ticket  # type: ignore[union-attr]
            with Connection(broker_url) as conn:
                _publish_raw(
                    conn,
                    reply_exchange(NAMES),
                    c.binding.oid,
                    json.dumps({"forger@evil": {"clock": 2**60, "revoked": ["x"]}}).encode(),
                    "application/json",
                    {"ticket": ticket, "clock": 2**60},
                )
            assert c.wait_synced(10)
            assert c.node.clock.value <= MAX_SAFE_CLOCK
            assert c.node.clock.value < 2 * target + 10_000, c.node.clock.value
            sync = c.syncs[-1]
            assert {a.name, b.name} <= set(sync.peers), sync
            # everyone still answers, with sane clocks
            with Connection(broker_url) as conn, Client(conn) as client:
                clocks = client.call("clock", {}, timeout=1.0, expect=3).replies
            assert {a.name, b.name, c.name} <= set(clocks)
            assert all(isinstance(v, dict) and v["clock"] < MAX_SAFE_CLOCK for v in clocks.values())


# -- limits from the config file -----------------------------------------------------------


def test_config_file_limits_apply_to_tail(broker_url: str, tmp_path: Path) -> None:
    config = tmp_path / "wkctl.yaml"
    config.write_text(f"broker_url: {broker_url}\nlimits: {{max_body_bytes: 2000, max_depth: 4}}\n")
    tail = start_tail(["--config", str(config), "-v", "tail", "--json", "--validate"], tmp_path)
    try:
        with Connection(broker_url) as conn:
            exchange = event_exchange(NAMES, transport_of(broker_url))
            small = {"type": "worker-custom", "hostname": "a@b", "clock": 1, "n": "x" * 10}
            big = dict(small, n="x" * 3000)
            deep = dict(small, n=[[[[[1]]]]])
            for body in (big, deep, small):
                _publish_raw(
                    conn,
                    exchange,
                    "worker.custom",
                    json.dumps(body).encode(),
                    "application/json",
                    {},
                )
        deadline = time.monotonic() + 10
        while (tmp_path / "tail.err").read_text().count("refused message") < 2 or not (
            tmp_path / "tail.out"
        ).read_text():
            assert time.monotonic() < deadline, (tmp_path / "tail.err").read_text()
            time.sleep(0.05)
    finally:
        interrupt(tail)
    out = (tmp_path / "tail.out").read_bytes()
    err = (tmp_path / "tail.err").read_text()
    assert "body too large: 30" in err and "> 2000" in err, err
    assert "too deeply nested" in err, err
    assert b'"n":"xxxxxxxxxx"' in out.replace(b" ", b"")


def test_config_file_limits_apply_to_node(broker_url: str, tmp_path: Path) -> None:
    config = tmp_path / "wkctl.yaml"
    config.write_text(f"broker_url: {broker_url}\nlimits: {{max_body_bytes: 2000}}\n")
    name = unique_name("lim")
    node = wkctl_popen(
        [
            "--config",
            str(config),
            "node",
            "--name",
            name,
            "--heartbeat",
            "0.5",
        ],
        stderr=open(tmp_path / "node.err", "wb"),
        cwd=str(REPO),
    )
    try:
        deadline = time.monotonic() + 20
        while ": ready." not in (tmp_path / "node.err").read_text():
            assert time.monotonic() < deadline and node.poll() is None
            time.sleep(0.05)
        with Connection(broker_url) as conn:
            body = {"method": "ping", "arguments": {"pad": "x" * 5000}, "destination": [name]}
            _publish_raw(
                conn, pidbox_exchange(NAMES), "", json.dumps(body).encode(), "application/json", {}
            )
        deadline = time.monotonic() + 5
        while "body too large" not in (tmp_path / "node.err").read_text():
            assert time.monotonic() < deadline, (tmp_path / "node.err").read_text()[-1500:]
            time.sleep(0.05)
    finally:
        node.terminate()
        node.wait(10)


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test CA")
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=wkctl-test-ca",
        ],
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    ]
    for step in steps:
        subprocess.run([str(s) for s in step], check=True, capture_output=True)
    return {"ca": ca, "key": key, "cert": cert}


@pytest.fixture
def amqps_url(tls_files: dict[str, Path], broker_pool: Any, tmp_path: Path) -> Iterator[str]:
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    if stunnel is None:
        pytest.skip(
            "stunnel is not installed (Debian: apt-get install stunnel4): no amqps endpoint"
        )
    if broker_pool.amqp_url is None:
        pytest.skip("no RabbitMQ")
    plain = broker_pool.isolated("amqp")
    parts = urlsplit(plain)
    port = free_port()
    conf = tmp_path / "stunnel.conf"
    conf.write_text(
        "foreground = yes\npid =\n[amqps]\n"
        f"accept = 127.0.0.1:{port}\nconnect = {parts.hostname}:{parts.port or 5672}\n"
        f"cert = {tls_files['cert']}\nkey = {tls_files['key']}\n"
    )
    proc = subprocess.Popen(
        [stunnel, str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "stunnel.log", "wb"),
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "stunnel.log"
                ).read_text()
                time.sleep(0.05)
        yield urlunsplit(
            ("amqps", f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}", parts.path, "", "")
        )
    finally:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def rediss_url(tls_files: dict[str, Path]) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    server = RedisProc(
        port=port,
        extra_args=(
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(tls_files["cert"]),
            "--tls-key-file",
            str(tls_files["key"]),
            "--tls-ca-cert-file",
            str(tls_files["ca"]),
            "--tls-auth-clients",
            "no",
        ),
    )
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"this redis-server has no TLS support: {str(exc)[-200:]}")
    try:
        yield f"rediss://127.0.0.1:{port}/0"
    finally:
        server.close()


def _tls_round_trip(url: str, ssl_options: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "wkctl.yaml"
    config.write_text(json.dumps({"broker_url": url, "broker_use_ssl": ssl_options}))
    name = unique_name("tls")
    node = wkctl_popen(
        [
            "--config",
            str(config),
            "node",
            "--name",
            name,
            "--heartbeat",
            "0.5",
        ],
        stderr=open(tmp_path / "node.err", "wb"),
        cwd=str(REPO),
    )
    try:
        deadline = time.monotonic() + 20
        while ": ready." not in (tmp_path / "node.err").read_text():
            assert time.monotonic() < deadline and node.poll() is None, (
                tmp_path / "node.err"
            ).read_text()[-2000:]
            time.sleep(0.05)
        result = run_cli("--config", str(config), "hello", "--json", "--expect", "1")
        assert result.returncode == 0, result.stderr
        assert name in json.loads(result.stdout), result.stdout
        result = run_cli("--config", str(config), "dump", "--json", "--duration", "1.5")
        assert result.returncode == 0, result.stderr
        assert name in json.loads(result.stdout)["workers"]
        # without the CA the certificate cannot be verified: one-line broker error
        bad = tmp_path / "bad.yaml"
        opts = {k: v for k, v in ssl_options.items() if "ca" not in k}
        bad.write_text(
            json.dumps(
                {"broker_url": url, "broker_use_ssl": opts or True, "broker_connection_timeout": 3}
            )
        )
        result = run_cli("--config", str(bad), "hello", timeout=60)
        assert result.returncode == 4, (result.returncode, result.stderr)
        assert result.stderr.startswith("wkctl: error:") and "Traceback" not in result.stderr
    finally:
        node.terminate()
        node.wait(10)
    assert node.returncode == 0, (tmp_path / "node.err").read_text()[-1500:]


def test_amqps_through_stunnel(amqps_url: str, tls_files: dict[str, Path], tmp_path: Path) -> None:
    _tls_round_trip(amqps_url, {"ca_certs": str(tls_files["ca"]), "cert_reqs": 2}, tmp_path)


def test_rediss_with_redis_tls_port(
    rediss_url: str, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    _tls_round_trip(
        rediss_url, {"ssl_ca_certs": str(tls_files["ca"]), "ssl_cert_reqs": 2}, tmp_path
    )


# -- credentials never shown -----------------------------------------------------------------

SECRET = "Pw-s3cret-9f27"


@pytest.fixture
def secret_amqp_url(broker_pool: Any) -> Iterator[str]:
    if broker_pool.amqp_url is None or not broker_pool.can_make_vhosts:
        pytest.skip("needs a local RabbitMQ with rabbitmqctl to create a user")
    plain = broker_pool.isolated("amqp")
    parts = urlsplit(plain)
    vhost = parts.path.lstrip("/")
    user = f"wkctl-sec-{uuid.uuid4().hex[:6]}"
    subprocess.run(["rabbitmqctl", "-q", "add_user", user, SECRET], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield urlunsplit(
            ("amqp", f"{user}:{SECRET}@{parts.hostname}:{parts.port or 5672}", parts.path, "", "")
        )
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True)


def _leaks(text: str) -> bool:
    return SECRET in text or quote(SECRET) in text


def test_credentials_never_appear_in_output(
    secret_amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    url = secret_amqp_url
    outputs: list[tuple[str, str]] = []

    def record(label: str, result: Any) -> Any:
        outputs.append((label, result.stdout + result.stderr))
        return result

    node = NodeProcess.start(
        url, unique_name("sec"), "--heartbeat", "0.5", "--log-level", "DEBUG", logdir=tmp_path
    )
    try:
        r = record(
            "hello -v --json", run_cli("--broker", url, "-vv", "hello", "--json", "--expect", "1")
        )
        assert r.returncode == 0 and node.name in json.loads(r.stdout), r.stderr
        record("clock --json", run_cli("--broker", url, "-v", "clock", "--json"))
        record("revoked", run_cli("--broker", url, "-v", "revoked", "--json"))
        record("tail", run_cli("--broker", url, "-vv", "tail", "--json", "--duration", "1.5"))
        record("dump", run_cli("--broker", url, "-v", "dump", "--json", "--duration", "1"))
        record("env", run_cli("-v", "clock", env={"WKCTL_BROKER_URL": url}))
        config = tmp_path / "wkctl.yaml"
        config.write_text(f"broker_url: {url}\n")
        record("config", run_cli("--config", str(config), "-vv", "--debug", "hello", "--json"))
        # error paths: wrong password, wrong vhost, nothing listening, bad config
        wrong = url.replace(SECRET, SECRET + "x")
        r = record("bad password", run_cli("--broker", wrong, "--debug", "hello"))
        assert r.returncode == 4, r.stderr
        r = record("bad vhost", run_cli("--broker", url + "-nope", "-vv", "--debug", "clock"))
        assert r.returncode == 4, r.stderr
        closed = url.replace(f":{urlsplit(url).port or 5672}/", f":{free_port()}/")
        r = record("closed port", run_cli("--broker", closed, "--debug", "hello"))
        assert r.returncode == 4
        bad_cfg = tmp_path / "bad.yaml"
        bad_cfg.write_text(f"broker_url: {url}\nbroker_url_typo: 1\n")
        record("bad config", run_cli("--config", str(bad_cfg), "hello"))
        r = record(
            "node bad password", run_cli("--broker", wrong, "node", "--name", unique_name("x"))
        )
        assert r.returncode == 4
        # Redis: a password the server does not expect is an error path too
        parts = urlsplit(redis_url)
        redis_secret = urlunsplit(
            ("redis", f":{SECRET}@{parts.hostname}:{parts.port or 6379}", parts.path, "", "")
        )
        r = record("redis auth", run_cli("--broker", redis_secret, "-vv", "--debug", "hello"))
        assert r.returncode in (0, 1, 4)
    finally:
        node.stop()
    outputs.append(("node log", node.log_text()))
    assert "amqp://" in node.log_text() or "connecting to" in node.log_text()
    leaked = [label for label, text in outputs if _leaks(text)]
    assert not leaked, {label: text[-800:] for label, text in outputs if label in leaked}
