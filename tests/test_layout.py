"""The packages form a stack: nothing imports back up (docs/architecture.md's layout says why)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("depthstream", "export", "serving", "bridge", "client", "demo", "bench")
# what each package may import from the others
ALLOWED = {
    "depthstream": set(),
    "export": {"depthstream"},
    "serving": {"depthstream"},
    "bridge": {"depthstream"},
    "client": {"depthstream"},  # drawing depth is depthstream.render's, shared with the bridge
    "demo": {"depthstream", "serving", "bridge"},  # make demo's composition root: starts both
    "bench": {"depthstream", "export", "serving", "bridge", "client"},  # the top: measures them all
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_runs_back_up(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        allowed = ALLOWED[package] | {package}
        assert imported_packages(path) <= allowed, f"{relative} imports {imported_packages(path) - allowed}"


def test_the_bridge_image_carries_only_what_the_bridge_runs():
    dockerfile = (ROOT / "deploy" / "bridge.Dockerfile").read_text()
    copied = {line.split()[1].rstrip("/") for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert copied == {"deploy/requirements-bridge.txt", "depthstream", "bridge", "web"}


def test_every_planted_bug_of_make_mutate_still_finds_its_target():
    from tests.mutations import MUTATIONS

    missing = [m.name for m in MUTATIONS if (ROOT / m.path).read_text().count(m.old) != 1]
    assert missing == [], (
        f"make mutate would stop at these: edit their targets in tests/mutations.py: {missing}"
    )


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project's modules ``path`` imports, anywhere in it (inside functions and under
    TYPE_CHECKING too: a circle there is a circle to the reader)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def test_no_import_circle_anywhere():
    paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    known = {module_name(p) for p in paths}
    graph = {module_name(p): imported_modules(p, known) - {module_name(p)} for p in paths}
    for package in PACKAGES:  # importing a package's module is not importing its __init__ back
        for module in graph:
            graph[module].discard(package)
    circles = []

    def visit(module: str, trail: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in trail:
                circles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in done:
                visit(target, [*trail, target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert circles == [], f"import circles: {circles}"
