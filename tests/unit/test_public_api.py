"""Every name ``wkctl.protocol`` promises is importable, and typed."""

from __future__ import annotations

import importlib
import importlib.resources

import wkctl.protocol as protocol


def test_every_export_resolves() -> None:
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None, name


def test_drop_in_imports_from_the_issue() -> None:
    from wkctl.protocol import Gossip, Mingle, State, Task, Worker

    assert State.Worker is Worker and State.Task is Task
    assert Mingle.label == "Mingle" and Gossip.label == "Gossip" and Gossip.requires == (Mingle,)


def test_py_typed_markers_ship() -> None:
    for package in ("wkctl", "wkctl.protocol"):
        files = importlib.resources.files(package)
        assert (files / "py.typed").is_file(), package
