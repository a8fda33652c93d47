"""Every module of the package imports on its own, in a fresh interpreter: the order
the test suite happens to import things in cannot hide a circular import (papermill,
for one, imports this package's engine while it is itself being imported)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "progtc_kernel"


def modules() -> list[str]:
    """Every module of progtc_kernel but ``__main__`` ones (importing those runs the
    program). The test environment has every extra, so every module must import."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="module")
def imported() -> dict[str, subprocess.CompletedProcess[str]]:
    """Each module imported in an interpreter of its own, as many at once as there are
    cores (one at a time, these fresh interpreters took a minute and a half)."""

    def load(module: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300
        )

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return dict(zip(modules(), pool.map(load, modules()), strict=True))


@pytest.mark.parametrize("module", modules())
def test_the_module_imports_in_a_fresh_interpreter(
    module: str, imported: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    done = imported[module]

    assert done.returncode == 0, done.stderr


def test_papermill_finds_the_engine_whichever_is_imported_first() -> None:
    for first in [
        "papermill",
        "progtc_kernel.integrations.papermill",
        "progtc_kernel.integrations.papermill.engine",
    ]:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    f"import {first}\n"
                    "from papermill.engines import papermill_engines\n"
                    "from progtc_kernel.integrations.papermill import ProgtcEngine\n"
                    "assert papermill_engines.get_engine('progtc') is ProgtcEngine"
                ),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert done.returncode == 0, (first, done.stderr)
