"""The ``tools`` module as kernel code sees it."""

from __future__ import annotations

import json

from progtc_kernel import ToolKernel


async def run_ok(kernel: ToolKernel, code: str) -> str:
    result = await kernel.execute(code)
    assert result.ok, result.error
    return result.stdout


async def test_the_issue_example(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "from tools import get_weather\n"
        "import tools, asyncio\n"
        "w, hits = await asyncio.gather(get_weather('London', 'UK'), "
        "tools.search_database('hotels'))\n"
        "print(w, hits)\n")
    assert result.ok
    assert result.stdout.startswith("Weather in London, UK: Sunny, 22°C [{'id': 0")
    assert [c.name for c in result.tool_calls] == ["get_weather", "search_database"]


async def test_tools_have_real_signatures_and_docstrings(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, (
        "import inspect, tools\n"
        "print(inspect.signature(tools.search_database))\n"
        "print(inspect.signature(tools.get_weather))\n"
        "print(tools.get_weather.__doc__)\n"
        "help(tools.search_database)\n"))
    lines = out.splitlines()
    assert lines[0] == "(query: str, limit: int = 10) -> list[dict[str, Any]]"
    assert lines[1] == "(city: str, country: str) -> str"
    assert lines[2] == "Current weather for a city."
    assert "search_database(query: str, limit: int = 10)" in out
    assert "Search the database." in out


async def test_dir_lists_the_tools(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, "import tools; print(dir(tools))")
    assert out.strip() == "['ToolError', 'fail', 'get_weather', 'search_database']"


async def test_star_import_brings_every_tool(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, "from tools import *\nprint(await get_weather('Rome', 'IT'))")
    assert out.strip() == "Weather in Rome, IT: Sunny, 22°C"


async def test_unknown_tool_names_the_available_ones(kernel: ToolKernel) -> None:
    result = await kernel.execute("from tools import get_wether")
    assert not result.ok and result.error
    assert result.error.ename == "ImportError"
    assert "available tools: fail, get_weather, search_database" in result.error.evalue

    result = await kernel.execute("import tools; tools.nope")
    assert result.error and result.error.ename == "AttributeError"
    assert "no tool 'nope'" in result.error.evalue


async def test_input_and_output_schemas_reach_the_kernel(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, (
        "import json, tools\n"
        "print(json.dumps([tools.search_database.input_schema, "
        "tools.get_weather.output_schema]))"))
    input_schema, output_schema = json.loads(out)
    assert input_schema["required"] == ["query"]
    assert input_schema["properties"]["limit"] == {"default": 10, "title": "limit",
                                                   "type": "integer"}
    assert output_schema == {"type": "string"}


async def test_calls_without_await_block_in_plain_functions(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, (
        "import tools\n"
        "def run():\n"
        "    hits = tools.search_database('inns', limit=2)\n"
        "    return {'weather': tools.get_weather('Oslo', 'NO'), 'hits': len(hits)}\n"
        "print(run())\n"))
    assert out.strip() == "{'weather': 'Weather in Oslo, NO: Sunny, 22°C', 'hits': 2}"


async def test_blocking_call_from_a_cell_that_also_awaits(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, (
        "import asyncio, tools\n"
        "def run():\n"
        "    return tools.get_weather('Lima', 'PE')\n"
        "await asyncio.sleep(0)\n"
        "print(run())\n"))
    assert out.strip() == "Weather in Lima, PE: Sunny, 22°C"


async def test_comprehensions_inside_async_code_stay_awaitable(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, (
        "import asyncio, tools\n"
        "cities = ['Paris', 'Tokyo', 'Cairo']\n"
        "print(await asyncio.gather(*[tools.get_weather(c, 'X') for c in cities]))\n"
        "print(await asyncio.gather(*(tools.get_weather(c, 'Y') for c in cities)))\n"))
    first, second = out.splitlines()
    assert "Weather in Tokyo, X" in first and "Weather in Cairo, Y" in second


async def test_top_level_statements_without_await_block(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, "import tools\nprint(tools.get_weather('Quito', 'EC'))")
    assert out.strip() == "Weather in Quito, EC: Sunny, 22°C"
    # IPython compiles each top-level statement on its own: only those with `await`
    # are coroutines, so a plain statement in an awaiting cell still blocks.
    out = await run_ok(kernel, (
        "import asyncio, tools\n"
        "w = tools.get_weather('Cusco', 'PE')\n"
        "await asyncio.sleep(0)\n"
        "for city in ['Lima']:\n"
        "    pending = tools.get_weather(city, 'PE')\n"
        "    await asyncio.sleep(0)\n"
        "print(w)\n"
        "print(await pending)\n"))
    assert out.splitlines() == ["Weather in Cusco, PE: Sunny, 22°C",
                                "Weather in Lima, PE: Sunny, 22°C"]


async def test_wrong_arguments_fail_on_the_callers_line(kernel: ToolKernel) -> None:
    result = await kernel.execute("import tools\ntools.get_weather('Paris')")
    assert result.error is not None
    assert result.error.ename == "ToolArgumentError"
    assert "missing a required argument: 'country'" in result.error.evalue
    assert "tools.get_weather('Paris')" in result.error.traceback


async def test_tool_error_is_catchable(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, (
        "from tools import fail, ToolError\n"
        "try:\n"
        "    await fail('boom')\n"
        "except ToolError as e:\n"
        "    print(e.tool, e.error_type, e.message)\n"))
    assert out.strip() == "fail ValueError boom"


async def test_uncaught_tool_error_shows_user_code_only(kernel: ToolKernel) -> None:
    result = await kernel.execute("from tools import fail\nawait fail('no rooms')")
    assert result.error is not None
    assert result.error.kind == "runtime"
    assert result.error.ename == "ToolError"
    assert result.error.evalue == "tool 'fail' failed: ValueError: no rooms"
    assert "await fail('no rooms')" in result.error.traceback
    assert "progtc_kernel" not in result.error.traceback
    assert "\x1b[" not in result.error.traceback
    [call] = result.tool_calls
    assert (call.name, call.ok, call.error) == ("fail", False, "ValueError: no rooms")
