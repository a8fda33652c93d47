"""What the published package asks of a user's install, and what stays in the checkout.

The tools for working on this checkout (pytest, JupyterLab, Selenium, Kernel Gateway,
MkDocs...) are PEP 735 dependency groups, which no wheel publishes: an extra a user can
name pulls in only what a feature of the package needs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
USER_EXTRAS = {
    "server",
    "mcp",
    "pydantic-ai",
    "notebook",
    "papermill",
    "typecheck",
    "otel",
    "e2b",
    "all",
}


def test_the_published_extras_are_features_of_the_package_only() -> None:
    assert set(PYPROJECT["project"]["optional-dependencies"]) == USER_EXTRAS


def test_the_development_tools_are_dependency_groups() -> None:
    groups = PYPROJECT["dependency-groups"]
    assert {"test", "docs", "dev"} <= set(groups)
    assert {"include-group": "test"} in groups["dev"]
    assert {"include-group": "docs"} in groups["dev"]
    assert any(requirement.startswith("pytest") for requirement in groups["test"])
    assert any(requirement.startswith("mkdocstrings") for requirement in groups["docs"])


def test_all_names_every_user_extra_but_e2b() -> None:
    (everything,) = PYPROJECT["project"]["optional-dependencies"]["all"]
    named = everything.partition("[")[2].rstrip("]").split(",")
    assert set(named) == USER_EXTRAS - {"e2b", "all"}
