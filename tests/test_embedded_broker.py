"""The embedded broker between real processes: nothing lost, nothing torn."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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
