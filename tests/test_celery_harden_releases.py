"""``wkctl.celery.install(app)`` on every supported Celery release (5.0 to 5.7),
on RabbitMQ and on Redis: the opt-in run of issue 14's "Releases".

Each cell is one release (from its cached venv of the release matrix, with
the kombu of its time, ``support.releases``) on one broker, and runs, in
order:

* ``steps``: a hardened worker starts with wkctl's Mingle and Gossip in
  place of Celery's (wkctl's start-up line, and one Mingle round: Celery's
  Mingle, which the stock worker of the cell runs, would log a second);
* ``revoked``: revoked ids sync with a stock worker of the release both
  ways (stock -> hardened when the hardened one starts, hardened -> stock
  when a second stock one starts), and the synced id stops the task on the
  hardened worker;
* ``control``: control requests kombu cannot dispatch (a JSON array, a body
  with no content type: DEFECT-27) are rejected, the hardened worker still
  answers ``ping``; the table notes how many stock workers went silent;
* ``heartbeat``: the malformed heartbeat (DEFECT-6): the hardened worker
  lives, rejects it, answers ``ping`` and runs a task;
* ``election``: a lone hardened worker (exchanges of its own) survives
  ``app.control.election(...)`` and runs the action once (DEFECT-1).

The default suite runs 5.4 and 5.7 in tests/test_celery_harden.py; this
module runs only with ``--release-matrix`` (every release, or a selection)::

    .venv/bin/python -m pytest tests/test_celery_harden_releases.py --release-matrix
    .venv/bin/python -m pytest tests/test_celery_harden_releases.py --release-matrix=5.0.5,5.3.6

The per-release table is printed at the end of the run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from test_release_matrix import interpreter

from support.brokers import BrokerPool
from support.celeryapp import client_app
from support.hardened import (
    build_overlay,
    hardened_env,
    lone_election,
    malformed_heartbeat,
    pings,
    records,
    runs_a_task,
    wait_until,
)
from support.hostile import Hostile, send_hostile
from support.releases import (
    HARDENED_RESULTS,
    HARDENED_SECONDS,
    HARDENED_STEPS,
    RELEASES,
    NotAvailable,
    release,
)
from support.workers import CeleryWorker, WorkerPool

pytestmark = [pytest.mark.broker, pytest.mark.celery]

#: the releases ``install`` supports (4.4.7 is refused, see test_celery_harden)
SUPPORTED = tuple(r.version for r in RELEASES if r.version.startswith("5."))
#: Celery's own Mingle says this at start-up (every release 5.0 to 5.7), and
#: so does wkctl's core
CELERY_MINGLE_LINE = "mingle: searching for neighbors"


def _cells(config: pytest.Config) -> list[tuple[str, str]]:
    option = config.getoption("--release-matrix")
    if not option:
        return []
    versions = (
        list(SUPPORTED) if option == "all" else [v.strip() for v in option.split(",") if v.strip()]
    )
    return [(v, b) for v in versions if v in SUPPORTED for b in ("amqp", "redis")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harden_cell" in metafunc.fixturenames:
        cells = _cells(metafunc.config)
        if not cells:
            metafunc.parametrize(
                "harden_cell",
                [pytest.param(None, marks=pytest.mark.skip(reason="opt in: --release-matrix"))],
            )
            return
        metafunc.parametrize("harden_cell", cells, ids=[f"{v}-{b}" for v, b in cells])


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_overlay(tmp_path_factory.mktemp("wkctl-overlay"))


def test_hardened_release(
    harden_cell: tuple[str, str],
    broker_pool: BrokerPool,
    worker_pool: WorkerPool,
    overlay: Path,
) -> None:
    version, broker = harden_cell
    rel = release(version)
    key = (version, broker)
    try:
        python = interpreter(rel, full=True)
    except NotAvailable as exc:
        HARDENED_RESULTS[key] = {step: f"not run: {exc}" for step in HARDENED_STEPS}
        pytest.skip(str(exc))
    from conftest import isolated_url

    url = isolated_url(broker_pool, broker)
    results: dict[str, str] = {}
    HARDENED_RESULTS[key] = results
    tag = uuid.uuid4().hex[:6]
    queue = f"hq-{tag}"
    lone_exchange = f"lone-{tag}"
    record_dir = worker_pool.record_dir
    started: list[CeleryWorker] = []

    def start(prefix: str, hardened: bool, **env: str) -> CeleryWorker:
        child = dict(hardened_env(version, overlay) if hardened else {})
        child.update(env)
        extra = ("-Q", f"celery,{queue}") if prefix == "h" else ()
        [worker] = worker_pool.start(
            url,
            version=version,
            python=python,
            prefix=prefix,
            env=child,
            extra_args=extra,
            wait=False,
        )
        started.append(worker)
        return worker

    def step(name: str, body: Callable[[], str]) -> None:
        begun = time.monotonic()
        try:
            detail = body()
        except Exception as exc:  # a red cell; the test fails at the end
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            results[name] = f"FAIL {text[:300]}"
        else:
            results[name] = f"ok {detail} ({time.monotonic() - begun:.1f} s)".replace("  ", " ")

    app = client_app(url)
    begun = time.monotonic()
    revoked_at_stock = f"stock-only-{uuid.uuid4()}"
    revoked_at_hardened = f"hardened-only-{uuid.uuid4()}"
    cell: dict[str, CeleryWorker] = {}
    try:
        stock = start("s", False)
        stock.wait_ready()
        app.control.revoke(revoked_at_stock, destination=[stock.hostname])

        def held(worker: CeleryWorker) -> set[str]:
            got = app.control.inspect(destination=[worker.hostname], timeout=2).revoked() or {}
            return set(got.get(worker.hostname) or [])

        assert wait_until(lambda: revoked_at_stock in held(stock), 10), "revoke did not reach"

        def steps() -> str:
            cell["lone"] = start(
                "lone",
                True,
                WKCTL_TEST_CONTROL_EXCHANGE=lone_exchange,
                WKCTL_TEST_EVENT_EXCHANGE=lone_exchange,
            )
            cell["hardened"] = hardened = start("h", True)
            for worker in (cell["lone"], hardened):
                worker.wait_ready()
                log = worker.log_text()
                assert "(wkctl's steps)" in log, f"{worker.hostname}: no wkctl start-up line"
                # wkctl's core says it too, once; Celery's Mingle would say it again
                assert log.count(CELERY_MINGLE_LINE) == 1, f"{worker.hostname}: two Mingles"
            assert CELERY_MINGLE_LINE in stock.log_text(), "the stock worker's Mingle line changed"
            return ""

        def revoked() -> str:
            hardened = cell["hardened"]
            assert revoked_at_stock in held(hardened), "stock -> hardened: the id did not sync"
            app.control.revoke(revoked_at_hardened, destination=[hardened.hostname])
            assert wait_until(lambda: revoked_at_hardened in held(hardened), 10)
            second = start("s", False)
            second.wait_ready()
            got = held(second)
            assert revoked_at_hardened in got, "hardened -> stock: the id did not sync"
            # the synced id stops the task on the hardened worker
            rkey, ckey = f"revoked-{tag}", f"control-{tag}"
            app.send_task("tasks.record", args=[rkey], task_id=revoked_at_stock, queue=queue)
            app.send_task("tasks.record", args=[ckey], queue=queue)
            assert wait_until(lambda: records(record_dir, ckey), 10), "no task ran"
            assert records(record_dir, rkey) == [], "the revoked task ran"
            return "both ways"

        def control() -> str:
            hardened = cell["hardened"]
            stock_names = [w.hostname for w in started if w.hostname.startswith("s")]
            send_hostile(
                url,
                [
                    Hostile("pidbox", "", b'["not", "a", "request"]', "application/json", {}),
                    Hostile("pidbox", "", b'{"method": "ping"}', None, {}),
                ],
            )
            assert wait_until(lambda: "rejected control request" in hardened.log_text(), 10), (
                "no rejection logged"
            )
            time.sleep(1.0)
            assert hardened.hostname in pings(url, [hardened.hostname]), "no ping reply"
            silent = set(stock_names) - pings(url, stock_names)
            return f"stock silenced: {len(silent)}/{len(stock_names)}"

        def heartbeat() -> str:
            hardened = cell["hardened"]
            malformed_heartbeat(url)
            assert wait_until(
                lambda: "rejected event worker-heartbeat from evil@x" in hardened.log_text(), 10
            ), "no rejection logged"
            time.sleep(1.0)
            assert hardened.alive(), "the hardened worker died"
            assert hardened.hostname in pings(url, [hardened.hostname]), "no ping reply"
            assert runs_a_task(url, queue, record_dir), "no task ran afterwards"
            dead = [w.hostname.split("@")[0] for w in started if not w.alive()]
            return f"stock dead: {len(dead)}" if dead else "stock survived too"

        def election() -> str:
            lone = cell["lone"]
            ident = lone_election(url, lone_exchange, record_dir)
            assert lone.alive(), "the lone worker died"
            assert f"I won the election {ident!r}" in lone.log_text(), "no win logged"
            return "ran once"

        for name, body in (
            ("steps", steps),
            ("revoked", revoked),
            ("control", control),
            ("heartbeat", heartbeat),
            ("election", election),
        ):
            if name != "steps" and not results.get("steps", "").startswith("ok"):
                results[name] = "not run: the hardened workers did not start"
                continue
            step(name, body)
    finally:
        HARDENED_SECONDS[key] = time.monotonic() - begun
        app.close()
        worker_pool.stop(started)
        broker_pool.release(url)
    red = {name: text for name, text in results.items() if not text.startswith("ok")}
    if red:
        logs = {w.hostname: w.log_text()[-1500:] for w in started if not w.hostname.startswith("s")}
        raise AssertionError(f"{red}\n{logs}")
