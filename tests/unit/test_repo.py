"""Repository-level promises: CI runs README's test command verbatim, README's unit
command runs the unit tests only, CI type-checks; compose file is sane."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import requires
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def readme_command(marker: str) -> str:
    """The one-line command README gives in the block after ``<!-- marker -->``."""
    text = (REPO / "README.md").read_text()
    pattern = rf"<!-- {marker} -->\s*```(?:sh|bash|console)?\n(.+?)\n```"
    match = re.search(pattern, text, re.S)
    assert match, f"README must give a command in a block after <!-- {marker} -->"
    return match.group(1).strip()


def readme_test_command() -> str:
    return readme_command("test-command")


def ci_lines() -> list[str]:
    return [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    command = readme_test_command()
    assert command in ci_lines(), f".ci/run must run exactly: {command}"


def test_readme_unit_command_runs_the_unit_tests_only() -> None:
    """The newcomer's command: one line, the unit extra (no Celery), pytest over tests/unit."""
    command = readme_command("unit-test-command")
    assert "\n" not in command
    steps = [step.strip() for step in command.split("&&")]
    assert steps[-1] == ".venv/bin/python -m pytest tests/unit", steps[-1]
    install = next(step for step in steps if "pip install" in step)
    assert "'.[unit]'" in install and "celery" not in install.lower(), install
    declared = requires("wkctl") or []
    unit = [dep for dep in declared if dep.endswith('extra == "unit"')]
    assert unit and not any(dep.lower().startswith("celery") for dep in unit), unit
    assert any(dep.startswith("wkctl[unit]") for dep in declared), "test extra includes unit"
    assert (REPO / "tests" / "unit" / "conftest.py").is_file()


def test_ci_type_checks_after_the_tests() -> None:
    """.ci/run type-checks with the test venv, after (never inside) the verbatim test command."""
    lines = ci_lines()
    test_line = lines.index(readme_test_command())
    typecheck = [
        i for i, line in enumerate(lines) if line.startswith(".venv/bin/python .ci/typecheck")
    ]
    assert typecheck and typecheck[0] > test_line, ".ci/run must run .ci/typecheck after the tests"
    assert (REPO / ".ci" / "typecheck").is_file()


def test_compose_file_parses_and_names_its_services() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())
    services = compose["services"]
    assert {"rabbitmq", "redis", "worker1", "worker2", "worker3", "wkctl-node"} <= set(services)
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name} names no image"
        assert "command" in service or name in ("rabbitmq",), name
    assert services["rabbitmq"]["image"].startswith("rabbitmq:")
    assert services["redis"]["image"].startswith("redis:")
    assert "node" in services["wkctl-node"]["command"]
    assert (REPO / "docker" / services["wkctl-node"]["build"]["dockerfile"].split("/")[-1]).exists()
    # each worker's app module is in the folder mounted as its working
    # directory, and needs nothing there but itself (the image has only Celery)
    for name in ("worker1", "worker2", "worker3"):
        service = services[name]
        app = re.search(r"celery -A (\w+) ", service["command"])
        assert app, service["command"]
        mounts = dict(v.rsplit(":", 2)[:2] for v in service["volumes"])
        folder = {inside: outside for outside, inside in mounts.items()}[service["working_dir"]]
        module = (REPO / "docker" / folder / f"{app.group(1)}.py").resolve()
        assert module.is_file(), f"{name}: {module} is not mounted"
        tree = ast.parse(module.read_text())
        imported = {
            (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
            for node in tree.body  # unconditional imports (wkctl only when hardening)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            and not (isinstance(node, ast.ImportFrom) and node.level)
            for alias in node.names
        }
        assert imported <= set(sys.stdlib_module_names) | {"celery", "kombu"}, (name, imported)


def test_test_modules_share_code_only_through_support() -> None:
    """Test modules never import each other or a conftest; bench never reaches into tests/."""
    import ast

    for path in sorted((REPO / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert not top.startswith("test_") and top != "conftest", (
                    f"{path.relative_to(REPO)} imports {name}: move what it shares to tests/support"
                )
    for path in sorted((REPO / "bench").rglob("*.py")):
        text = path.read_text()
        imported = {
            (node.module or "").split(".")[0]
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.ImportFrom) and node.level == 0
        }
        assert "support" not in imported, f"{path.relative_to(REPO)} imports the test library"
