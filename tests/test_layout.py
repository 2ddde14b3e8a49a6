"""The layout: the user's entry points at the top, everything else in one package by role, imports
running one way (the top imports the package; the package imports nothing of the top) and no
cycle inside the package."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from harness import ROOT

PACKAGE = ROOT / "sqs_message_service"
#: The names the user gave the project's top-level modules, each holding its role.
USERS_NAMES = {"server", "message", "worker", "sqsinterface", "config", "client", "sqs_setup"}


def imported(path: Path) -> set[str]:
    """The modules `path` imports, absolute, relative ones resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import x`
    return names


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_the_top_holds_only_the_users_names() -> None:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    top = {Path(line).stem for line in listed.stdout.splitlines() if "/" not in line}

    assert top == USERS_NAMES


def test_the_package_imports_nothing_from_the_top() -> None:
    for name, path in package_modules().items():
        top_level = {module.split(".")[0] for module in imported(path)}
        assert not top_level & USERS_NAMES, f"{name} imports {sorted(top_level & USERS_NAMES)} from the top"


def test_every_entry_point_at_the_top_uses_the_package() -> None:
    for name in USERS_NAMES:
        modules = imported(ROOT / f"{name}.py")
        assert any(module.startswith("sqs_message_service") for module in modules), f"{name}.py uses no module of it"


def test_the_package_docstring_names_each_of_its_shared_modules() -> None:
    import sqs_message_service

    shared = {path.stem for path in (ROOT / "sqs_message_service").glob("*.py") if path.stem != "__init__"}
    named = set(re.findall(r"`(\w+)`", sqs_message_service.__doc__ or ""))
    assert shared - named == set(), "sqs_message_service/__init__.py: say what each module is for"


def test_no_module_of_the_package_imports_one_that_imports_it_back() -> None:
    modules = package_modules()
    graph = {name: {dep for dep in imported(path) if dep in modules and dep != name} for name, path in modules.items()}
    # a package's __init__ is imported by each of its modules: only its own imports count as edges
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    cycles.append(" -> ".join([*trail, dep]))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*trail, dep]))
    assert cycles == []


class Collection:
    """What a pytest run in this process collected, and what its -m deselected."""

    def __init__(self) -> None:
        self.selected: list[pytest.Item] = []
        self.deselected: list[pytest.Item] = []

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected.extend(items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected = list(session.items)


def test_the_tests_that_start_processes_are_apart_and_out_of_the_fast_tier() -> None:
    # every test under tests/process/ is integration by its folder: the fast tier collects none
    # (collected in this process, whose imports are done: a new one would take seconds of CPU)
    fast = Collection()
    code = pytest.main(
        ["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not integration", str(ROOT / "tests" / "process")],
        plugins=[fast],
    )

    assert code == pytest.ExitCode.NO_TESTS_COLLECTED and fast.selected == [] and len(fast.deselected) > 50
    assert {Path(item.path).parent for item in fast.deselected} == {ROOT / "tests" / "process"}
    # and no whole file of process tests is left elsewhere
    for path in (ROOT / "tests").rglob("test_*.py"):
        if "process" not in path.relative_to(ROOT / "tests").parts:
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^pytestmark = pytest\.mark\.integration", text, re.M), path


def test_no_function_of_the_product_is_over_60_lines() -> None:
    long = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / f"{name}.py" for name in USERS_NAMES)]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                if node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")

    assert long == []
