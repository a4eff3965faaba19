"""The project package is the base the apps stand on: it never imports them."""

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent / "taskmgmt"
APPS = ("accounts", "tasks")


@pytest.mark.parametrize("module", sorted(PROJECT.glob("*.py")), ids=lambda path: path.name)
def test_the_project_package_imports_no_app(module):
    imported = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] in APPS}
