"""``wkctl top`` used the way a person uses it: in a terminal (a tmux pane),
watching a real Celery 5.7 worker run tasks, pressing keys, quitting.

The pane's text is read with ``tmux capture-pane``; the plain-text
fallback is read from a pipe.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Producer

from support.celeryapp import client_app
from support.eventstreams import realistic_stream
from support.workers import CeleryWorker, WorkerPool, _die_with_parent
from wkctl.protocol.broker import BrokerSettings, event_exchange

pytestmark = [pytest.mark.broker, pytest.mark.celery]


class Pane:
    """One tmux pane on a private tmux server (its own socket)."""

    def __init__(self, command: str, width: int = 150, height: int = 60) -> None:
        self.socket = f"wkctl-top-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            [
                "tmux",
                "-L",
                self.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                str(width),
                "-y",
                str(height),
                command,
            ],
            check=True,
        )

    def text(self) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "capture-pane", "-p", "-t", "top"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", "-t", "top", *keys], check=True)

    def wait(self, predicate: object, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if predicate(text):  # type: ignore[operator]
                return text
            assert time.monotonic() < deadline, f"timed out; the pane shows:\n{text}"
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture(scope="module")
def worker(
    module_broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, CeleryWorker]]:
    tmp = tmp_path_factory.mktemp("top")
    pool = WorkerPool(logdir=tmp, record_dir=tmp)
    try:
        yield module_broker_url, pool.start(module_broker_url, prefix="top")[0]
    finally:
        pool.stop_all()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_top_in_a_terminal(worker: tuple[str, CeleryWorker]) -> None:
    url, w = worker
    pane = Pane(
        f"sh -c 'unset COLUMNS LINES; {sys.executable} -m wkctl -b {url} top --interval 0.3; echo EXIT=$?; sleep 60'"
    )
    try:
        text = pane.wait(lambda t: w.hostname in t and "alive" in t)
        assert "Workers (sort: name)" in text and "py-celery" in text
        client = client_app(url)
        try:
            for i in range(5):
                client.send_task("tasks.add", args=(i, i))
            for _ in range(2):
                client.send_task("tasks.fail", args=("shown in top",))
        finally:
            client.close()

        def tasks_shown(t: str) -> bool:
            lines = [line.split() for line in t.splitlines()]
            return ["succeeded", "5"] in [ln[:2] for ln in lines] and [
                "failed",
                "2",
            ] in [ln[:2] for ln in lines]

        text = pane.wait(tasks_shown)
        assert "tasks.fail" in text and "RuntimeError" in text  # latest failures
        # keys: sort
        pane.keys("s")
        pane.wait(lambda t: "sort: heartbeat" in t)
        # filter workers by a name that matches none, then clear
        pane.keys("w", "no-such-worker", "Enter")
        text = pane.wait(lambda t: "(none match)" in t)
        assert w.hostname not in text
        pane.keys("c")
        pane.wait(lambda t: w.hostname in t)
        # filter failures by task name
        pane.keys("t", "tasks.add", "Enter")
        text = pane.wait(lambda t: "'tasks.add'" in t)
        assert "RuntimeError" not in text
        # quit: the screen is restored and the exit status is 0
        pane.keys("q")
        text = pane.wait(lambda t: "EXIT=" in t, 10)
        assert "EXIT=0" in text
        assert "Workers (sort" not in text  # the alternate screen is gone
    finally:
        pane.close()


def test_top_plain_text_when_not_a_terminal(worker: tuple[str, CeleryWorker]) -> None:
    """Not a terminal: the same tables as plain text, one frame per
    --interval however many events arrive (5,000 published meanwhile: enough
    to redraw per event hundreds of times, few enough for a loaded machine to
    deliver within --duration)."""
    url, w = worker
    proc = subprocess.Popen(
        [sys.executable, "-m", "wkctl", "-b", url, "top", "--interval", "0.5", "--duration", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_die_with_parent,
    )
    time.sleep(1.5)
    items = list(realistic_stream(5_000, seed=3, workers=20, batches=True))
    settings = BrokerSettings(url=url)
    with settings.connection() as conn:
        producer = Producer(
            conn.channel(), exchange=event_exchange(settings.names, settings.transport)
        )
        for item in items:
            first = item[0] if isinstance(item, list) else item
            key = "task.multi" if isinstance(item, list) else first["type"].replace("-", ".")
            producer.publish(item, routing_key=key, serializer="json", declare=[producer.exchange])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    frames = out.split("-" * 40)
    assert 6 <= len(frames) <= 17  # periodic (7 s / 0.5 s), not per event
    assert w.hostname in out
    assert "\x1b[" not in out  # plain text: no escape sequences
    last = [f for f in frames if "events" in f][-1]
    events = int(last.split("events", 1)[1].split()[0])
    assert events >= 5_000, last[:300]
