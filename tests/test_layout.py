"""The import layers (docs/architecture.md, Layers): arrows point one way.

taskmgmt (the project package) is the base and imports no app; accounts is
identity and imports no other app; nodes may use accounts; tasks may use both.
Nothing imports tasks: only the URL root routes to it (by include() strings)
and the settings name its apps.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "nodes", "tasks")
# What each package may not import.
FORBIDDEN = {
    "taskmgmt": {"accounts", "nodes", "tasks"},
    "accounts": {"nodes", "tasks"},
    "nodes": {"tasks"},
}


def imported_modules(module: Path) -> set[str]:
    imported = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return imported


def imported_packages(module: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(module)}


MODULES = [
    (package, module) for package in FORBIDDEN for module in sorted((ROOT / package).rglob("*.py"))
]


@pytest.mark.parametrize(
    ("package", "module"),
    MODULES,
    ids=[str(module.relative_to(ROOT)) for _, module in MODULES],
)
def test_a_package_imports_only_the_layers_below_it(package, module):
    assert not imported_packages(module) & FORBIDDEN[package]


def test_the_layers_cover_every_app_and_the_project_package():
    assert set(FORBIDDEN) | {"tasks"} == {*APPS, "taskmgmt"}
    assert all(len(list((ROOT / package).rglob("*.py"))) > 3 for package in FORBIDDEN)


@pytest.mark.parametrize("name", ["metrics.py", "dashboard.py", "selectors.py"])
def test_the_metrics_and_the_dashboard_figures_import_no_admin_module(name):
    """/metrics reads the figures the dashboard shows, not the admin site that shows them."""
    imported = imported_modules(ROOT / "tasks" / name)

    assert not {"django.contrib.admin", "tasks.admin", "tasks.admin_site"} & imported


def test_the_rule_sees_an_import_of_a_forbidden_app(tmp_path):
    module = tmp_path / "example.py"
    module.write_text("import tasks.models\nfrom nodes.models import Node\nfrom . import sibling\n")

    assert imported_packages(module) == {"tasks", "nodes"}
