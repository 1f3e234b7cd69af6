"""The Celery app the test suite runs as real protocol peers.

Workers of several Celery releases import this same module.  ``record``
leaves a file per call so that a test can see which worker ran an action
(for example the one elected), without a result backend.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from celery import Celery, current_task

app = Celery("wkctl_testapp")
app.conf.update(
    broker_url=os.environ.get("WKCTL_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    control_exchange=os.environ.get("WKCTL_TEST_CONTROL_EXCHANGE", "celery"),
    event_exchange=os.environ.get("WKCTL_TEST_EVENT_EXCHANGE", "celeryev"),
    # sentinel master_name, Redis global_keyprefix, ... (the deployment tests)
    broker_transport_options=json.loads(os.environ.get("WKCTL_TEST_TRANSPORT_OPTIONS") or "{}"),
)
if os.environ.get("WKCTL_TEST_TRANSPORT_OPTIONS"):
    # JSON: broker_transport_options (e.g. a secret, to show DEFECT-18)
    app.conf.broker_transport_options = json.loads(os.environ["WKCTL_TEST_TRANSPORT_OPTIONS"])


@app.task(name="tasks.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tasks.record")
def record(key: str) -> str:
    """Leave ``<key>.<hostname>`` in WKCTL_TEST_RECORD_DIR: proof of who ran it."""
    hostname = current_task.request.hostname or "unknown"
    folder = Path(os.environ.get("WKCTL_TEST_RECORD_DIR", "."))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.{hostname}").write_text(hostname)
    return hostname


@app.task(name="tasks.fail")
def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


@app.task(name="tasks.flaky", bind=True, max_retries=5)
def flaky(self, times: int = 1) -> int:
    """Retry ``times`` times (at once), then succeed: retried tasks on demand."""
    if self.request.retries < times:
        raise self.retry(countdown=0)
    return self.request.retries


def client_app(broker_url: str, **conf: object) -> Celery:
    """A Celery app for the test process itself, talking to ``broker_url``.

    Use this rather than ``app.control.inspect(connection=...)``: Celery
    publishes control requests through the app's own producer pool, so a
    connection passed in only receives the replies.
    """
    client = Celery("wkctl_testclient", set_as_current=False)
    client.conf.update(app.conf)
    client.conf.update(broker_url=broker_url, **conf)
    return client


if os.environ.get("WKCTL_TEST_HARDEN") == "1":
    # A hardened worker (issue 14): wkctl's Mingle and Gossip in this worker.
    import wkctl.celery

    wkctl.celery.install(app)
