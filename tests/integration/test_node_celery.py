"""Task messages the node sends, read by Celery's own code (needs Celery importable)."""

from __future__ import annotations

import pytest

from wkctl.protocol.node import (
    celery_task_message,
)


def test_task_message_has_celerys_header_set() -> None:
    celery = pytest.importorskip("celery")
    app = celery.Celery(set_as_current=False)
    # a signature applied by an election winner keeps its args list (the
    # captured task-sent event of Celery 5.7 shows args "[2, 3]")
    ref = app.amqp.as_task_v2("tid", "tasks.add", args=[2, 3], kwargs={})
    ours = celery_task_message(
        {"task": "tasks.add", "args": [2, 3], "kwargs": {}, "options": {"task_id": "tid"}},
        "n@h",
        new_id=lambda: "unused",
    )
    assert set(ours.headers) == set(ref.headers)
    assert (
        ours.headers["argsrepr"] == ref.headers["argsrepr"]
        and ours.headers["kwargsrepr"] == ref.headers["kwargsrepr"]
    )
    assert [list(ref.body[0]), ref.body[1], ref.body[2]] == ours.body
    assert ours.properties["correlation_id"] == ref.properties["correlation_id"]
    with pytest.raises(ValueError):
        celery_task_message({"no": "task"}, "n@h", new_id=lambda: "unused")
