"""The package layout of DESIGN.md: leaves stay leaves, sim stays out of production code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("geo", "vision", "missions", "sim", "api", "dustpatrol")
# Which of our own packages each package may import (DESIGN.md, "Layout").
ALLOWED = {
    "geo": set(),
    "vision": set(),
    "missions": {"geo"},
    "sim": {"geo"},
    "api": {"geo", "dustpatrol"},
    "dustpatrol": set(PACKAGES),
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - allowed)
        for path in (ROOT / package).rglob("*.py")
        if imported_packages(path) - allowed
    }
    assert offenders == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_is_typed(package: str) -> None:
    assert (ROOT / package / "py.typed").is_file()
