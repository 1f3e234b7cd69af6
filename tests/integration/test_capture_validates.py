"""Real traffic of real Celery workers validates against the schemas.

A mixed cluster (two workers of the newest Celery, one of Celery 5.4, whose
wire forms differ: ``revoked`` mapping vs list, integer vs float
``utcoffset``) runs on RabbitMQ and on Redis while :class:`support.capture.Capture`
records every pidbox request, pidbox reply and event.  Celery's own client
API drives the traffic.  Every captured message must validate against its
kind (body and envelope), the captures must cover every kind, and the
``wkctl validate`` command, run as a real subprocess on the recorded file,
must agree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.capture import Capture, fixed_reply_key, kinds_seen
from wkctl.protocol.validation import detect_kind, is_valid, validate

pytestmark = [pytest.mark.broker, pytest.mark.celery]

REPO = Path(__file__).resolve().parents[2]

KIND_OF = {
    "pidbox-request:hello": "hello",
    "pidbox-request:clock": "clock",
    "pidbox-request:revoked": "revoked",
    "pidbox-request:ping": "ping",
    "pidbox-request:revoke": "revoke",
    "pidbox-request:election": "election",
    "pidbox-reply:hello": "hello-reply",
    "pidbox-reply:clock": "clock-reply",
    "pidbox-reply:revoked": "revoked-reply",
    "pidbox-reply:ping": "ping-reply",
    "pidbox-reply:revoke": "revoke-reply",
    "event-batch": "event-batch",
}


def schema_kind(record: dict[str, Any]) -> str | None:
    if record["kind"] in KIND_OF:
        return KIND_OF[record["kind"]]
    if record["kind"].startswith("pidbox-request:"):
        return "request"
    if record["kind"].startswith("event:"):
        return detect_kind(record["body"])
    return None


def driver_app(url: str, control_exchange: str = "celery", event_exchange: str = "celeryev") -> Any:
    from celery import Celery

    app = Celery("wkctl_capture_driver", broker=url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        broker_connection_retry_on_startup=True,
        control_exchange=control_exchange,
        event_exchange=event_exchange,
    )
    return app


def test_real_traffic_validates(
    broker_url: str, celery_workers: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Exchange names of this test's own ([TRANSPORT-1]): custom names are
    # part of the protocol, and they keep any other cluster on the same
    # broker namespace out of the capture.
    tag = uuid.uuid4().hex[:6]
    names = {"control_exchange": f"wkctl{tag}", "event_exchange": f"wkctlev{tag}"}
    env = {
        "WKCTL_TEST_CONTROL_EXCHANGE": names["control_exchange"],
        "WKCTL_TEST_EVENT_EXCHANGE": names["event_exchange"],
    }
    app = driver_app(broker_url, **names)
    oid = fixed_reply_key(app)
    with Capture(broker_url, reply_keys=[oid], **names) as capture:
        queue = f"wkctl-capture-{tag}"  # tasks for our workers only
        extra = ("-Q", queue)
        newest = celery_workers(broker_url, n=2, version="5.7", env=env, extra_args=extra)
        older = celery_workers(broker_url, n=1, version="5.4", env=env, extra_args=extra)
        hostnames = [w.hostname for w in newest + older]

        revoked_id = f"capture-{uuid.uuid4().hex[:8]}"  # not a UUID: any string is a task id
        app.control.revoke(revoked_id, reply=True, timeout=1.0)
        inspect = app.control.inspect(timeout=1.0)
        hello = inspect.hello("capture@wkctl-test", [f"cafe-{uuid.uuid4()}"])
        assert hello and set(hostnames) <= set(hello), hello
        assert inspect.clock() and inspect.revoked() and inspect.ping()
        app.control.heartbeat()
        election_id = f"capture-{uuid.uuid4().hex[:8]}"
        app.control.election(election_id, "task", app.signature("tasks.add", (2, 3)))
        app.send_task("tasks.add", (2, 3), queue=queue)
        app.send_task("tasks.fail", ("on purpose",), queue=queue)

        assert capture.wait_for(
            lambda recs: (
                sum(r["kind"] == "event:worker-elect-ack" for r in recs) >= 9
                and any(
                    r["kind"] == "event:task-failed" or _batch_has(r, "task-failed") for r in recs
                )
            ),
            timeout=15,
        ), (sorted(kinds_seen(capture.snapshot())), capture.errors)
        older[0].stop()  # a clean stop: worker-offline
        assert capture.wait_for(
            lambda recs: any(r["kind"] == "event:worker-offline" for r in recs), timeout=10
        )
        time.sleep(0.3)
    assert not capture.errors, capture.errors
    records = capture.snapshot()

    failures = []
    for record in records:
        kind = schema_kind(record)
        if kind is None:
            failures.append(f"no schema kind for {record['kind']}: {record['body']!r}"[:300])
            continue
        issues = validate(record["body"], kind)
        envelope = {k: record[k] for k in ("headers", "content_type") if k in record}
        issues += validate(envelope, "envelope")
        assert is_valid(record["body"], kind) == (not validate(record["body"], kind))
        if issues:
            failures.append(f"{record['kind']} as {kind}: {issues} in {record['body']!r}"[:400])
    assert not failures, "\n".join(failures)

    seen = {schema_kind(r) for r in records}
    if any(r["kind"] == "event-batch" and r["body"] for r in records):
        seen.add("task-event")  # task events travel batched (task.multi) from workers
    expected = {
        "hello",
        "hello-reply",
        "clock",
        "clock-reply",
        "revoked",
        "revoked-reply",
        "ping",
        "ping-reply",
        "revoke",
        "revoke-reply",
        "election",
        "elect",
        "elect-ack",
        "heartbeat",
        "task-event",
    }
    assert expected <= seen, (expected - seen, capture.errors, capture._reply_keys, oid)
    # both wire forms of revoked in hello replies: list (5.7) and mapping (5.4)
    forms = {
        type(value.get("revoked")).__name__
        for r in records
        if r["kind"] == "pidbox-reply:hello"
        for value in r["body"].values()
        if isinstance(value, dict)
    }
    assert {"list", "dict"} <= forms, forms
    # both utcoffset encodings: int (5.4) and float (5.7)
    offsets = {
        type(r["body"]["utcoffset"]).__name__
        for r in records
        if r["kind"] == "event:worker-heartbeat"
    }
    assert {"int", "float"} <= offsets, offsets
    heartbeat_types = {r["body"]["type"] for r in records if schema_kind(r) == "heartbeat"}
    assert {"worker-online", "worker-heartbeat", "worker-offline"} <= heartbeat_types

    # the command line agrees, run as a user runs it
    path = capture.write_ndjson(tmp_path / f"capture-{request.node.callspec.id}.ndjson")
    proc = subprocess.run(
        [sys.executable, "-m", "wkctl", "validate", "--capture", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(records)
    assert all(r["valid"] for r in results)
    keep = os.environ.get("WKCTL_KEEP_CAPTURES")  # refresh tests/data with real traffic
    if keep:
        shutil.copy(path, Path(keep) / path.name)


def _batch_has(record: dict[str, Any], event_type: str) -> bool:
    body = record.get("body")
    return isinstance(body, list) and any(
        isinstance(e, dict) and e.get("type") == event_type for e in body
    )
