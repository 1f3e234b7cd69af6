"""Deployment shapes users run, each for real: every command, the node and a
Celery worker follow the same broker settings.

* Redis Sentinel: ``sentinel://`` with the ``master_name`` transport option,
  on a private master + replica + sentinel; the master is killed while
  ``wkctl tail``, a ``wkctl node`` and a Celery worker run: each recovers
  (times measured and printed) and no event published after ``tail``
  recovered is lost;
* a failover list of broker URLs (``amqp://down;amqp://up``) whose first
  broker is a closed local port;
* Redis ``global_keyprefix``, given three ways: ``--broker-transport-option``,
  the config file and the ``-A`` app;
* a RabbitMQ virtual host and user of their own (created with rabbitmqctl).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kombu import Producer

from support.brokerproc import free_port, redis_available
from support.brokers import BrokerPool
from support.cliproc import wait_for_text, wkctl_popen
from support.nodes import NodeProcess, unique_name
from support.sentinel import MASTER_NAME, SentinelCluster
from support.workers import HERE, REPO, CeleryWorker, WorkerPool
from wkctl.protocol.broker import BrokerSettings, event_exchange

pytestmark = [pytest.mark.broker, pytest.mark.celery]


def wkctl(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    child_env = {
        k: v for k, v in os.environ.items() if k not in ("WKCTL_BROKER_URL", "CELERY_BROKER_URL")
    }
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "wkctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(cwd),
        env=child_env,
    )


def hello_nodes(
    *args: str, expect: int, cwd: Path = REPO, env: dict[str, str] | None = None
) -> set[str]:
    """The nodes answering ``wkctl ... hello`` (empty when none or on error)."""
    done = wkctl(
        *args, "hello", "--json", "--expect", str(expect), "--timeout", "2", cwd=cwd, env=env
    )
    if done.returncode != 0 or not done.stdout.strip().startswith("{"):
        return set()
    return set(json.loads(done.stdout))


def _options_env(options: dict[str, Any]) -> dict[str, str]:
    return {"WKCTL_TEST_TRANSPORT_OPTIONS": json.dumps(options)}


# -- Redis Sentinel ------------------------------------------------------------


class Marker:
    """Publishes numbered events on the event exchange every ``interval``
    seconds through its own connection (reconnecting through the sentinel
    after a failover); remembers when each publish succeeded."""

    def __init__(self, settings: BrokerSettings, interval: float = 0.05) -> None:
        self.settings = settings
        self.interval = interval
        self.sent: dict[str, float] = {}
        self.run_id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Marker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        exchange = event_exchange(self.settings.names, self.settings.transport)
        n = 0
        while not self._stop.is_set():
            conn = self.settings.connection()
            try:
                conn.ensure_connection(max_retries=1, timeout=2)
                producer = Producer(conn.channel(), exchange=exchange, serializer="json")
                while not self._stop.is_set():
                    uid = f"marker-{self.run_id}-{n}"
                    producer.publish(
                        {
                            "type": "task-sent",
                            "uuid": uid,
                            "name": "tasks.add",
                            "hostname": "marker@wkctl-test",
                            "timestamp": time.time(),
                            "clock": n + 1,
                            "utcoffset": 0,
                            "pid": os.getpid(),
                        },
                        routing_key="task.sent",
                    )
                    self.sent[uid] = time.monotonic()
                    n += 1
                    time.sleep(self.interval)
            except Exception:  # the master is gone: reconnect through the sentinel
                time.sleep(0.05)
            finally:
                try:
                    conn.release()
                except Exception:
                    pass


@pytest.fixture
def sentinel() -> Iterator[SentinelCluster]:
    reason = redis_available()
    if reason:
        pytest.skip(reason)
    cluster = SentinelCluster().start()
    yield cluster
    cluster.close()


def test_sentinel_failover_tail_node_and_worker_recover_and_lose_nothing_after(
    sentinel: SentinelCluster, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    url = sentinel.url
    option = ["-b", url, "--broker-transport-option", f"master_name={MASTER_NAME}"]
    settings = BrokerSettings(url=url, transport_options={"master_name": MASTER_NAME})
    node = _node(option, tmp_path)
    worker: CeleryWorker | None = None
    out = tmp_path / "tail.ndjson"
    marker = Marker(settings)
    try:
        worker = worker_pool.start(
            url, n=1, env=_options_env({"master_name": MASTER_NAME}), prefix="sen"
        )[0]
        assert hello_nodes(*option, expect=2) >= {node.name, worker.hostname}
        with out.open("wb") as sink:
            tail = wkctl_popen([*option, "tail", "--json"], stdout=sink, stderr=subprocess.PIPE)
            try:
                marker.start()
                wait_for_text(out, "marker-", tail, timeout=15)
                killed = time.monotonic()
                sentinel.kill_master()
                promoted = sentinel.wait_promoted()
                recovered: dict[str, float] = {}
                while time.monotonic() - killed < 60 and len(recovered) < 2:
                    seen = hello_nodes(*option, expect=2)
                    for name in seen & {node.name, worker.hostname}:
                        recovered.setdefault(name, time.monotonic() - killed)
                time.sleep(2.0)  # markers after recovery
                marker.stop()
                time.sleep(1.0)
            finally:
                tail.terminate()
                tail.wait(15)
        assert set(recovered) == {node.name, worker.hostname}, (recovered, node.log_text()[-2000:])
        assert node.process.poll() is None and worker.alive()
        received = {
            e.get("uuid"): i
            for i, e in enumerate(
                json.loads(line) for line in out.read_text().splitlines() if line.strip()
            )
            if str(e.get("uuid", "")).startswith("marker-")
        }
        after_kill = sorted((at, uid) for uid, at in marker.sent.items() if at > killed)
        first_seen = next((at for at, uid in after_kill if uid in received), None)
        assert first_seen is not None, "tail received no event published after the failover"
        lost = [uid for at, uid in after_kill if at >= first_seen and uid not in received]
        published_after = [uid for at, uid in after_kill if at >= first_seen]
        print(
            f"\nsentinel failover: replica promoted {promoted:.2f} s after the master was killed; "
            f"tail receives again {first_seen - killed:.2f} s after the kill; "
            f"node answers hello {recovered[node.name]:.2f} s, Celery 5.7 worker "
            f"{recovered[worker.hostname]:.2f} s; {len(published_after)} events published after "
            f"tail recovered, {len(lost)} lost"
        )
        assert not lost, f"{len(lost)} of {len(published_after)} events lost after recovery"
        assert len(published_after) > 10
    finally:
        marker.stop()
        node.stop()
        if worker is not None:
            worker_pool.stop([worker])


def _node(option: list[str], tmp_path: Path) -> NodeProcess:
    """``wkctl <option> node`` (NodeProcess puts only --broker before ``node``)."""
    name = unique_name("wks")
    logfile = tmp_path / f"node-{uuid.uuid4().hex[:4]}.log"
    process = wkctl_popen(
        [*option, "node", "--name", name, "--heartbeat", "1"],
        stdout=subprocess.DEVNULL,
        stderr=open(logfile, "wb"),
    )
    node = NodeProcess(name, option[1], logfile, process)
    node.wait_ready()
    return node


# -- a failover list of URLs ----------------------------------------------------


@pytest.fixture
def amqp_list(broker_pool: BrokerPool) -> Iterator[str]:
    if broker_pool.amqp_url is None:
        pytest.skip("no RabbitMQ")
    up = broker_pool.isolated("amqp")
    parts = urlsplit(up)
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}{parts.path}"  # nothing listens there
    yield f"{down};{up}"
    broker_pool.release(up)


def test_failover_list_with_the_first_broker_down(
    amqp_list: str, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    option = ["-b", amqp_list]
    worker = worker_pool.start(amqp_list, n=1, prefix="fo")[0]
    node = _node(option, tmp_path)
    try:
        assert hello_nodes(*option, expect=2) >= {node.name, worker.hostname}
        done = wkctl(*option, "dump", "--json", "--duration", "2.5")
        assert done.returncode == 0, done.stderr
        assert worker.hostname in json.loads(done.stdout)["workers"]
        verbose = wkctl(*option, "-v", "clock", "--json", "--expect", "2")
        assert verbose.returncode == 0, verbose.stderr
        assert "guest:guest" not in verbose.stderr  # the password stays masked
    finally:
        node.stop()
        worker_pool.stop([worker])


# -- Redis global_keyprefix ------------------------------------------------------


@pytest.fixture
def redis_db(broker_pool: BrokerPool) -> Iterator[str]:
    if broker_pool.redis_url is None:
        pytest.skip("no Redis")
    url = broker_pool.isolated("redis")
    yield url
    broker_pool.release(url)


def test_redis_global_keyprefix_from_option_config_and_app(
    redis_db: str, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    import redis

    prefix = f"team-{uuid.uuid4().hex[:4]}:"
    options = {"global_keyprefix": prefix}
    worker = worker_pool.start(redis_db, n=1, env=_options_env(options), prefix="kp")[0]
    option = ["-b", redis_db, "--broker-transport-option", f"global_keyprefix={prefix}"]
    node = _node(option, tmp_path)
    try:
        # the node (started with the option) synced with the prefixed worker
        assert node.wait_log("mingle: sync with 1 nodes", 10), node.log_text()[-1000:]
        both = {node.name, worker.hostname}
        assert hello_nodes(*option, expect=2) >= both
        config = tmp_path / "wkctl.yaml"
        config.write_text(
            f"broker_url: {redis_db}\nbroker_transport_options: {{global_keyprefix: '{prefix}'}}\n"
        )
        assert hello_nodes("--config", str(config), expect=2) >= both
        app_env = {"WKCTL_TEST_BROKER_URL": redis_db, **_options_env(options)}
        assert hello_nodes("-A", "celeryapp", expect=2, cwd=HERE, env=app_env) >= both
        # every key the worker, the node and the commands made carries the prefix
        client = redis.Redis.from_url(redis_db)
        try:
            keys = [k.decode() for k in client.keys("*")]
        finally:
            client.close()
        assert keys and all(k.startswith(prefix) for k in keys), keys[:10]
        # without the prefix nobody is there: the setting is what connects them
        assert hello_nodes("-b", redis_db, expect=1) == set()
    finally:
        node.stop()
        worker_pool.stop([worker])


# -- a RabbitMQ vhost and user of their own --------------------------------------


@pytest.fixture
def amqp_user(broker_pool: BrokerPool) -> Iterator[str]:
    if not broker_pool.can_make_vhosts or broker_pool.amqp_url is None:
        pytest.skip("needs a local RabbitMQ and rabbitmqctl")
    tag = uuid.uuid4().hex[:6]
    user, password, vhost = f"wkctl-user-{tag}", f"pw-{uuid.uuid4().hex}", f"wkctl-team-{tag}"

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    ctl("add_user", user, password)
    ctl("add_vhost", vhost)
    ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    parts = urlsplit(broker_pool.amqp_url)
    yield f"amqp://{user}:{password}@{parts.hostname}:{parts.port or 5672}/{vhost}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)


def test_rabbitmq_vhost_and_user_of_their_own(
    amqp_user: str, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    password = urlsplit(amqp_user).password or ""
    worker = worker_pool.start(amqp_user, n=1, prefix="vh")[0]
    node = _node(["-b", amqp_user], tmp_path)
    try:
        both = {node.name, worker.hostname}
        assert hello_nodes("-b", amqp_user, expect=2) >= both
        done = wkctl("-b", amqp_user, "-v", "dump", "--json", "--duration", "2.5")
        assert done.returncode == 0, done.stderr
        assert worker.hostname in json.loads(done.stdout)["workers"]
        assert password not in done.stderr and password not in node.log_text()
        # the guest user has no permission on this vhost: refused, one line, exit 4
        parts = urlsplit(amqp_user)
        denied = wkctl(
            "-b", f"amqp://guest:guest@{parts.hostname}:{parts.port}{parts.path}", "clock"
        )
        assert denied.returncode == 4 and denied.stderr.startswith("wkctl: error:"), denied.stderr
    finally:
        node.stop()
        worker_pool.stop([worker])


def test_broker_transport_option_is_checked() -> None:
    done = wkctl("--broker-transport-option", "novalue", "clock")
    assert done.returncode == 2
    assert "--broker-transport-option: expected KEY=VALUE" in done.stderr


def test_transport_options_parse_and_win_over_the_config_file() -> None:
    from wkctl.cli.config import Config, parse_transport_options, resolve_broker

    options = parse_transport_options(
        ["master_name=mymaster", "visibility_timeout=3600", 'x={"a": 1}']
    )
    assert options == {"master_name": "mymaster", "visibility_timeout": 3600, "x": {"a": 1}}
    config = Config(
        broker_url="redis://h/0", broker_transport_options={"global_keyprefix": "a:", "k": 1}
    )
    settings = resolve_broker(None, config, {}, transport_options={"global_keyprefix": "b:"})
    assert dict(settings.transport_options) == {"global_keyprefix": "b:", "k": 1}


def test_every_password_of_a_failover_list_is_masked() -> None:
    settings = BrokerSettings(url="amqp://u:first@h1//;amqp://v:second@h2:5673/vh")
    assert settings.masked_url == "amqp://u:**@h1//;amqp://v:**@h2:5673/vh"
    assert settings.failover_retries == 1
    assert BrokerSettings(url="redis://h/0").failover_retries == 0
