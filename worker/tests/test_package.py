"""The worker package installs alone: it imports the standard library and itself only."""

import ast
import sys
from pathlib import Path

import taskmgmt_worker

PACKAGE = Path(taskmgmt_worker.__file__).parent


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_package_imports_nothing_but_the_standard_library_and_itself():
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 4
    for module in modules:
        outside = imported_roots(module) - set(sys.stdlib_module_names) - {"taskmgmt_worker"}
        assert outside == set(), f"{module.name} imports {outside}"
