"""Every name ``wkctl.protocol`` promises is importable, and typed."""

from __future__ import annotations

import importlib
import importlib.resources
import subprocess
import sys

import wkctl.protocol as protocol


def test_every_export_resolves() -> None:
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None, name


def test_drop_in_imports_from_the_issue() -> None:
    from wkctl.protocol import Gossip, Mingle, State, Task, Worker

    assert State.Worker is Worker and State.Task is Task
    assert Mingle.label == "Mingle" and Gossip.label == "Gossip" and Gossip.requires == (Mingle,)


def test_importing_the_package_is_cheap() -> None:
    code = "import sys, wkctl.protocol; print(sorted(m for m in sys.modules if m.startswith('wkctl.protocol.')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "state" not in out and "binding" not in out, out


def test_py_typed_markers_ship() -> None:
    for package in ("wkctl", "wkctl.protocol"):
        files = importlib.resources.files(package)
        assert (files / "py.typed").is_file(), package


def _leaves(hint: object) -> list[object]:
    import typing

    if isinstance(hint, (list, tuple)):
        return [leaf for item in hint for leaf in _leaves(item)]
    args = typing.get_args(hint)
    return _leaves(args) if args else [hint]


def test_every_type_in_an_exported_signature_is_exported() -> None:
    """A user who gets a value from an exported callable can name its type
    from ``wkctl.protocol`` (annotations of exported functions, classes'
    fields and their public methods)."""
    import inspect
    import typing

    namespace = {name: getattr(protocol, name) for name in protocol.__all__}
    exported = {id(value) for value in namespace.values()}
    missing: dict[str, str] = {}

    def walk(obj: object, where: str) -> None:
        for key, hint in typing.get_type_hints(obj, localns=namespace).items():
            for leaf in _leaves(hint):
                module = getattr(leaf, "__module__", "")
                if inspect.isclass(leaf) and module.startswith("wkctl.protocol"):
                    if id(leaf) not in exported:
                        missing.setdefault(f"{module}.{leaf.__qualname__}", f"{where}.{key}")

    for name in protocol.__all__:
        obj = getattr(protocol, name)
        if inspect.isclass(obj):
            walk(obj, name)
            for member, value in vars(obj).items():
                if member.startswith("_") and member != "__init__":
                    continue
                func = (
                    value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                )
                if inspect.isfunction(func):
                    walk(func, f"{name}.{member}")
        elif inspect.isfunction(obj):
            walk(obj, name)
    assert not missing, missing


def test_observers_need_no_kombu() -> None:
    """The sans-IO observers (reply collection, event decoding, elections seen
    from outside) import without kombu, and import no I/O module themselves."""
    import ast
    from pathlib import Path

    code = (
        "import sys, wkctl.protocol.replies, wkctl.protocol.observers, wkctl.protocol.reconnect;"
        "print('kombu' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    for name in ("replies", "observers", "reconnect"):
        tree = ast.parse(Path(protocol.__file__).with_name(f"{name}.py").read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level
        }
        assert not imported & {"kombu", "time", "os", "socket", "uuid", "threading"}, (
            name,
            imported,
        )
