"""The embedded broker between real processes: nothing lost, nothing torn, and
nothing left behind by processes that exited (clean exit or kill)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from wkctl.protocol.broker import embedded_settings

PUBLISHER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from kombu import Exchange
    from wkctl.protocol.broker import embedded_settings
    folder, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with embedded_settings(folder).connection() as conn:
        producer = conn.Producer(serializer="json")
        for i in range(n):
            producer.publish({"tag": tag, "i": i, "pad": "x" * 2000},
                             exchange=Exchange("fan", type="fanout"), routing_key="")
""")

CONSUMER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from kombu import Exchange, Queue
    from wkctl.protocol.broker import embedded_settings
    folder, name, expected = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    seen = set()
    with embedded_settings(folder).connection() as conn:
        queue = Queue(name, Exchange("fan", type="fanout"), channel=conn.default_channel)
        queue.declare()
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        while len(seen) < expected and time.monotonic() < deadline:
            message = queue.get(no_ack=True)
            if message is None:
                time.sleep(0.002)
                continue
            body = message.payload
            seen.add((body["tag"], body["i"]))
    print(json.dumps(len(seen)))
""")


def test_concurrent_publishers_and_consumers_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    embedded_settings(folder).prepare()
    per_publisher, publishers = 400, 3
    expected = per_publisher * publishers
    consumers = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, str(folder), f"q{i}", str(expected)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for consumer in consumers:
        assert consumer.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
    pubs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(folder), f"p{i}", str(per_publisher)]
        )
        for i in range(publishers)
    ]
    for pub in pubs:
        assert pub.wait(120) == 0
    for consumer in consumers:
        out, err = consumer.communicate(timeout=120)
        assert consumer.returncode == 0, err
        assert int(out.strip().splitlines()[-1]) == expected, err
    leftovers = [p.name for p in (folder / "queues").iterdir()]
    assert leftovers == [], leftovers


# -- clean-up after processes that exited (issue 12) ---------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kombu import Exchange, Queue
    from wkctl.protocol.broker import embedded_settings
    folder, name = Path(sys.argv[1]), sys.argv[2]
    with embedded_settings(folder).connection() as conn:
        queue = Queue(name, Exchange("fan", type="fanout"), channel=conn.default_channel,
                      exclusive=True, auto_delete=True)
        queue.declare()
        print("ready", flush=True)
        time.sleep(600)
""")


def _publish(folder: Path, n: int) -> None:
    from kombu import Exchange

    with embedded_settings(folder).connection() as conn:
        producer = conn.Producer(serializer="json")
        for i in range(n):
            producer.publish({"i": i}, exchange=Exchange("fan", type="fanout"), routing_key="")


def _survey(folder: Path) -> Any:
    from wkctl.protocol.fsbroker import survey

    return survey(folder / "queues", folder / "control")


def test_queues_of_a_killed_process_are_swept_by_the_next_channel(tmp_path: Path) -> None:
    from wkctl.protocol.fsbroker import Channel

    folder = tmp_path / "broker"
    embedded_settings(folder).prepare()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), "held"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        _publish(folder, 5)
        live = _survey(folder).queues["held"]
        assert (live.messages, live.bindings, live.alive, live.stale) == (5, 1, True, False)
    finally:
        holder.kill()  # no clean exit: only the owner record says it is gone
        holder.wait(10)
    dead = _survey(folder).queues["held"]
    assert dead.stale and "exited" in dead.reason
    with embedded_settings(folder).connection() as conn:
        assert isinstance(conn.default_channel, Channel)  # opening a channel sweeps
    after = _survey(folder)
    assert "held" not in after.queues and after.bindings == 0
    assert not list((folder / "queues").iterdir())


def test_a_clean_exit_deletes_its_auto_delete_queues(tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    embedded_settings(folder).prepare()
    with embedded_settings(folder).connection() as conn:
        from kombu import Exchange, Queue

        Queue("mine", Exchange("fan", type="fanout"), exclusive=True, auto_delete=True)(
            conn.default_channel
        ).declare()
        assert _survey(folder).queues["mine"].bindings == 1
    assert _survey(folder).bindings == 0


def test_demo_runs_in_a_row_leave_a_bounded_broker(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    for key in ("WKCTL_BROKER_URL", "CELERY_BROKER_URL"):
        env.pop(key, None)
    figures = []
    for _ in range(2):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "wkctl",
                "demo",
                "--tail-seconds",
                "0.3",
                "--dump-seconds",
                "0.3",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        found = _survey(tmp_path / "wkctl" / "broker")
        figures.append((found.files, found.bindings, len(found.queues)))
    # nothing of the first run's processes is left for the second to copy messages into
    # (a few late copies for queues being deleted may wait for the next sweep)
    assert figures[1][1] == 0, figures
    assert figures[1][0] <= figures[0][0] + 6, figures
    shown = subprocess.run(
        [sys.executable, "-m", "wkctl", "broker", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["bindings"] == 0 and doc["stale"] == []


def test_broker_command_shows_and_cleans(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    env.pop("WKCTL_BROKER_URL", None)
    folder = tmp_path / "wkctl" / "broker"
    embedded_settings(folder).prepare()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), "held"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        _publish(folder, 3)
    finally:
        holder.kill()
        holder.wait(10)

    def wkctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wkctl", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    shown = wkctl("broker")
    assert shown.returncode == 0, shown.stderr
    assert f"embedded broker at {folder}" in shown.stdout
    assert "held" in shown.stdout and "stale" in shown.stdout
    assert shown.stdout.rstrip().splitlines()[-1].endswith("1 stale queue(s)")
    cleaned = wkctl("broker", "clean", "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    doc = json.loads(cleaned.stdout)
    assert doc["removed"] == ["held"] and doc["files_after"] < doc["files_before"]
    other = wkctl("-b", "redis://127.0.0.1:1/0", "broker")
    assert other.returncode == 2 and "shows and cleans the embedded broker" in other.stderr
