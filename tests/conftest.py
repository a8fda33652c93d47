"""Real kernels for the tests, on each supported ipykernel line.

The first run creates one virtual environment per line under ``.kernel-envs/``
(with ``uv`` when available, else venv + pip), each with this project installed
in editable mode; later runs reuse them. ``PROGTC_TEST_KERNELS`` picks lines,
e.g. ``PROGTC_TEST_KERNELS=7`` for a quick run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import ExecutionFinished, ToolCallStarted, ToolKernel

ROOT = Path(__file__).resolve().parent.parent
ENVS = ROOT / ".kernel-envs"
LINES = {"6.31": "ipykernel==6.31.*", "7": "ipykernel>=7,<8"}
# Every other supported release line, for the checks of the private-internals module.
OTHER_LINES = {f"{major}.{minor}": f"ipykernel=={major}.{minor}.*"
               for major, minor in [(6, 29), (6, 30), (7, 0), (7, 1), (7, 2), (7, 3)]}


def _selected_lines() -> list[str]:
    wanted = os.environ.get("PROGTC_TEST_KERNELS")
    return [line.strip() for line in wanted.split(",")] if wanted else list(LINES)


def _python_of(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def kernel_env(line: str) -> str:
    """Path of a Python with progtc_kernel and the given ipykernel line (built once)."""
    env = ENVS / f"ipykernel-{line}"
    python = _python_of(env)
    marker = env / ".ready"
    if not marker.exists():
        shutil.rmtree(env, ignore_errors=True)
        requirement = {**LINES, **OTHER_LINES}[line]
        uv = shutil.which("uv") or (shutil.which("uv", path=str(Path(sys.executable).parent)))
        if uv:
            subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(env)], check=True)
            subprocess.run([uv, "pip", "install", "-q", "--python", str(python), "-e", str(ROOT),
                            requirement], check=True)
        else:
            subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT),
                            requirement], check=True)
        marker.write_text(requirement)
    return str(python)


@pytest.fixture(scope="session", params=_selected_lines(), ids=lambda line: f"ipykernel-{line}")
def kernel_python(request: pytest.FixtureRequest) -> str:
    return kernel_env(request.param)


@pytest.fixture(scope="session")
def newest_kernel_python() -> str:
    return kernel_env(_selected_lines()[-1])


# -- tools used across the tests ----------------------------------------------------

async def get_weather(city: str, country: str) -> str:
    """Current weather for a city."""
    return f"Weather in {city}, {country}: Sunny, 22°C"


def search_database(query: str, limit: int = 10) -> list[dict[str, Any]]:
    """Search the database."""
    return [{"id": i, "name": f"{query} {i}"} for i in range(min(limit, 3))]


async def fail(message: str) -> None:
    """Always raises."""
    raise ValueError(message)


TOOLS = [get_weather, search_database, fail]


@pytest.fixture(scope="module")
async def kernel(kernel_python: str) -> AsyncIterator[ToolKernel]:
    """One kernel per test module and ipykernel line, with TOOLS."""
    async with ToolKernel(TOOLS, python=kernel_python, timeout=60) as k:
        yield k


@pytest.fixture
def make_kernel(kernel_python: str) -> Callable[..., ToolKernel]:
    """A fresh ToolKernel with your own tools and options (use it with `async with`)."""

    def make(tools: Any = TOOLS, **options: Any) -> ToolKernel:
        options.setdefault("python", kernel_python)
        return ToolKernel(tools, **options)

    return make


async def interrupt_during_call(kernel: ToolKernel, code: str) -> tuple[float, str]:
    """Run code, interrupt it 0.2 s into its first tool call; returns how long the
    run took to end after the interrupt, and its error kind."""
    interrupted_at = 0.0
    async for event in kernel.stream(code):
        if isinstance(event, ToolCallStarted):
            await asyncio.sleep(0.2)
            interrupted_at = time.monotonic()
            await kernel.interrupt()
        if isinstance(event, ExecutionFinished):
            assert event.result.error is not None
            return time.monotonic() - interrupted_at, event.result.error.kind
    raise AssertionError("the run ended without a result")
