"""The vocabulary module: one definition per word, and peer classification."""

from __future__ import annotations

import ast
from pathlib import Path

from wkctl.protocol import vocab

REPO = Path(__file__).resolve().parents[2]


def test_peer_kind_tells_stock_hardened_wkctl_and_others_apart() -> None:
    assert vocab.peer_kind({"sw_ident": "py-celery", "sw_ver": "5.7.0"}) == "celery"
    assert vocab.peer_kind({"sw_ident": "py-celery", "wkctl_ver": "0.1.0"}) == "hardened"
    # a non-string marker is not a hardened worker's (it sends its version)
    assert vocab.peer_kind({"sw_ident": "py-celery", "wkctl_ver": 1}) == "celery"
    assert vocab.peer_kind({"sw_ident": "wkctl"}) == "wkctl"
    assert vocab.peer_kind({"sw_ident": "rusty-celery"}) == "other"
    assert vocab.peer_kind({}) == "other"


def test_request_methods_match_the_request_schemas() -> None:
    for method in vocab.REQUEST_METHODS:
        assert (REPO / "schemas" / f"{method}.json").exists(), method


def test_vocabulary_sets_are_defined_only_in_vocab() -> None:
    """A transport set or identity string assigned anywhere else is a second home."""
    names = {
        "CELERY_SW_IDENT",
        "GOSSIP_TRANSPORTS",
        "FANOUT_EVENT_TRANSPORTS",
        "REDIS_TRANSPORTS",
        "PER_NODE_PIDBOX_TRANSPORTS",
        "REQUEST_METHODS",
        "HEARTBEAT_TYPES",
    }
    offenders = []
    for folder in ("protocol", "cli", "conform"):
        for path in (REPO / folder).glob("*.py"):
            if path.name == "vocab.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        if isinstance(target, ast.Name) and target.id in names:
                            offenders.append(f"{path.name}: {target.id}")
    assert offenders == []
