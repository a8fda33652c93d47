"""Every Python the package declares (3.10 to 3.13) runs what depends on its version.

``progtc_kernel/_python.py`` holds those parts: where a call is written (frames, code
flags, comprehensions that have frames of their own before 3.12), ``from tools import
x`` told by the importing instruction, and asyncio's ``Task.cancelling`` on the host.
Here a kernel on each Python, with ipykernel alone (the host brings the kernel side),
runs them; and the host runs on each Python too.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest

from progtc_kernel import LocalKernel, ToolKernel

from .conftest import LINES, PYTHONS, ROOT, TOOLS, build_env, python_of_version, selected_pythons
from .test_cli import progtc_kernel


def on_python(version: str, name: str, requirements: list[str]) -> str:
    """A Python ``version`` environment with these requirements (built once)."""
    return build_env(f"python-{version}-{name}", requirements, base=python_of_version(version))


@pytest.fixture(scope="module", params=selected_pythons(), ids=lambda version: f"python-{version}")
async def kernel(request: pytest.FixtureRequest) -> AsyncIterator[ToolKernel]:
    """A kernel on each declared Python, with the newest ipykernel line and nothing of
    ours: the host brings the kernel side, as it does to a user's kernel."""
    version = request.param
    python = on_python(version, "ipykernel-only", [LINES["7"]])
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=python), timeout=60) as k:
        result = await k.execute("import sys\nprint('%d.%d' % sys.version_info[:2])")
        assert result.stdout.strip() == version, "the kernel runs another Python"
        yield k


async def run_ok(kernel: ToolKernel, code: str) -> list[str]:
    result = await kernel.execute(code)
    assert result.ok, result.error
    return result.stdout.splitlines()


async def test_from_tools_import_gives_tools_and_unknown_names_fail_as_imports(
    kernel: ToolKernel,
) -> None:
    out = await run_ok(kernel, "from tools import get_weather\nprint(get_weather('Oslo', 'NO'))")
    assert out == ["Weather in Oslo, NO: Sunny, 22°C"]

    imported = await kernel.execute("from tools import get_wether")
    assert imported.error is not None and imported.error.ename == "ImportError"
    assert "available tools: fail, get_weather, search_database" in imported.error.evalue

    looked_up = await kernel.execute("import tools\ntools.get_wether")
    assert looked_up.error is not None and looked_up.error.ename == "AttributeError"


async def test_where_a_call_is_written_decides_whether_it_awaits(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "import asyncio, tools\n"
            "cities = ['Oslo', 'Rome']\n"
            "def plain():\n"
            "    return tools.get_weather('Lima', 'PE')\n"
            "async def nested():\n"
            "    get = lambda city: tools.get_weather(city, 'L')\n"
            "    return await get('Kyiv')\n"
            "print(await asyncio.gather(*[tools.get_weather(c, 'A') for c in cities]))\n"
            "by_city = {c: tools.get_weather(c, 'B') for c in cities}\n"
            "print(await asyncio.gather(*by_city.values()))\n"
            "print(await asyncio.gather(*(tools.get_weather(c, 'C') for c in cities)))\n"
            "print(await nested())\n"
            "print(plain())\n"
        ),
    )
    assert out == [
        "['Weather in Oslo, A: Sunny, 22°C', 'Weather in Rome, A: Sunny, 22°C']",
        "['Weather in Oslo, B: Sunny, 22°C', 'Weather in Rome, B: Sunny, 22°C']",
        "['Weather in Oslo, C: Sunny, 22°C', 'Weather in Rome, C: Sunny, 22°C']",
        "Weather in Kyiv, L: Sunny, 22°C",
        "Weather in Lima, PE: Sunny, 22°C",
    ]


async def test_in_a_cell_without_await_comprehensions_block(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "import tools\n"
            "print([tools.get_weather(c, 'A') for c in ['Oslo']])\n"
            "print(list(tools.get_weather(c, 'B') for c in ['Rome']))\n"
        ),
    )
    assert out == ["['Weather in Oslo, A: Sunny, 22°C']", "['Weather in Rome, B: Sunny, 22°C']"]


async def test_tools_show_their_signatures(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "import inspect, tools\n"
            "print(inspect.signature(tools.search_database))\n"
            "print(tools.get_weather.__doc__)\n"
        ),
    )
    assert out == [
        "(query: str, limit: int = 10) -> list[dict[str, Any]]",
        "Current weather for a city.",
    ]


async def test_a_call_never_awaited_names_its_line(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "import asyncio, tools\n"
        "await asyncio.sleep(0)\n"
        "tools.get_weather('Oslo', 'NO')\n"
        "print('next')\n"  # (a cell's last value is kept in Out)
    )
    assert result.ok, result.error
    assert "tools.get_weather(...) was never awaited" in result.stderr
    assert "line 3" in result.stderr or ":3:" in result.stderr


async def test_a_failed_call_shows_the_users_lines_only(kernel: ToolKernel) -> None:
    result = await kernel.execute("from tools import fail\nawait fail('no rooms')")
    assert result.error is not None and result.error.ename == "ToolError"
    assert "await fail('no rooms')" in result.error.traceback
    assert "progtc_kernel" not in result.error.traceback


@pytest.mark.parametrize("version", selected_pythons())
def test_the_host_runs_on_each_python(version: str) -> None:
    python = on_python(version, "progtc-kernel", ["-e", str(ROOT), LINES["7"]])
    done = progtc_kernel("run", "examples/agent.py", "--tools", "examples/tools.py", python=python)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("London  Light rain, 14°C\nParis   Sunny, 22°C\n")
    assert "No hotel in Paris: no rooms available in Paris" in done.stdout
    assert "| Paris | Sunny, 22°C | no rooms left |" in done.stdout


@pytest.mark.fast
def test_this_interpreter_is_one_the_package_declares() -> None:
    assert "{}.{}".format(*sys.version_info[:2]) in PYTHONS
