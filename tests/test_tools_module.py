"""The ``tools`` module as kernel code sees it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest

from progtc_kernel import Tool, ToolDefinitionError, ToolKernel, ToolRegistry
from progtc_kernel.exceptions import RESERVED_TOOL_NAMES
from progtc_kernel.kernel_side.tools_module import RULE

from .test_cli import progtc_kernel

ERRORS = [
    "HostDisconnectedError",
    "ToolArgumentError",
    "ToolDeniedError",
    "ToolError",
    "ToolTimeoutError",
]


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
        "print(w, hits)\n"
    )
    assert result.ok
    assert result.stdout.startswith("Weather in London, UK: Sunny, 22°C [{'id': 0")
    assert [c.name for c in result.tool_calls] == ["get_weather", "search_database"]


async def test_tools_have_real_signatures_and_docstrings(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "import inspect, tools\n"
            "print(inspect.signature(tools.search_database))\n"
            "print(inspect.signature(tools.get_weather))\n"
            "print(tools.get_weather.__doc__)\n"
            "help(tools.search_database)\n"
        ),
    )
    lines = out.splitlines()
    assert lines[0] == "(query: str, limit: int = 10) -> list[dict[str, Any]]"
    assert lines[1] == "(city: str, country: str) -> str"
    assert lines[2] == "Current weather for a city."
    assert "search_database(query: str, limit: int = 10)" in out
    assert "Search the database." in out


async def test_dir_lists_the_tools_and_their_errors(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, "import tools; print(dir(tools))")
    assert out.strip() == str(
        sorted([*ERRORS, "catalog", "fail", "get_weather", "search_database"])
    )


async def test_every_error_a_call_can_raise_is_importable_from_tools(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "from tools import ToolError, ToolArgumentError, ToolTimeoutError, "
            "HostDisconnectedError, ToolDeniedError\n"
            "print(all(issubclass(e, ToolError) for e in "
            "(ToolArgumentError, ToolTimeoutError, HostDisconnectedError, ToolDeniedError)))\n"
            "print(issubclass(ToolTimeoutError, TimeoutError))\n"
            "print(issubclass(ToolDeniedError, PermissionError))"
        ),
    )
    assert out.splitlines() == ["True", "True", "True"]


async def test_help_states_the_await_rule(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, "import tools\nhelp(tools)")
    assert "Tools: fail, get_weather, search_database." in out
    assert RULE in " ".join(out.split())


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
    out = await run_ok(
        kernel,
        (
            "import json, tools\n"
            "print(json.dumps([tools.search_database.input_schema, "
            "tools.get_weather.output_schema]))"
        ),
    )
    input_schema, output_schema = json.loads(out)
    assert input_schema["required"] == ["query"]
    assert input_schema["properties"]["limit"] == {
        "default": 10,
        "title": "limit",
        "type": "integer",
    }
    assert output_schema == {"type": "string"}


async def test_calls_without_await_block_in_plain_functions(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "import tools\n"
            "def run():\n"
            "    hits = tools.search_database('inns', limit=2)\n"
            "    return {'weather': tools.get_weather('Oslo', 'NO'), 'hits': len(hits)}\n"
            "print(run())\n"
        ),
    )
    assert out.strip() == "{'weather': 'Weather in Oslo, NO: Sunny, 22°C', 'hits': 2}"


async def test_blocking_call_from_a_cell_that_also_awaits(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "import asyncio, tools\n"
            "def run():\n"
            "    return tools.get_weather('Lima', 'PE')\n"
            "await asyncio.sleep(0)\n"
            "print(run())\n"
        ),
    )
    assert out.strip() == "Weather in Lima, PE: Sunny, 22°C"


async def test_comprehensions_inside_async_code_stay_awaitable(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "import asyncio, tools\n"
            "cities = ['Paris', 'Tokyo', 'Cairo']\n"
            "print(await asyncio.gather(*[tools.get_weather(c, 'X') for c in cities]))\n"
            "print(await asyncio.gather(*(tools.get_weather(c, 'Y') for c in cities)))\n"
        ),
    )
    first, second = out.splitlines()
    assert "Weather in Tokyo, X" in first and "Weather in Cairo, Y" in second


async def test_a_cell_without_await_blocks(kernel: ToolKernel) -> None:
    out = await run_ok(kernel, "import tools\nprint(tools.get_weather('Quito', 'EC'))")
    assert out.strip() == "Weather in Quito, EC: Sunny, 22°C"


async def test_in_a_cell_that_awaits_every_top_level_call_is_awaitable(
    kernel: ToolKernel,
) -> None:
    # The rule is per cell: a statement without `await` in a cell that awaits still
    # gives an awaitable, so progtc-style code runs as written.
    out = await run_ok(
        kernel,
        (
            "import asyncio, tools\n"
            "w = tools.get_weather('Cusco', 'PE')\n"
            "for city in ['Lima']:\n"
            "    pending = tools.get_weather(city, 'PE')\n"
            "print(await w)\n"
            "print(await pending)\n"
        ),
    )
    assert out.splitlines() == [
        "Weather in Cusco, PE: Sunny, 22°C",
        "Weather in Lima, PE: Sunny, 22°C",
    ]


async def test_calls_in_threads_block(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "import asyncio, tools\n"
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(4) as pool:\n"
            "    found = list(pool.map(lambda c: tools.get_weather(c, 'IT'), ['Rome', 'Pisa']))\n"
            "print(found)\n"
            "print(await asyncio.to_thread(tools.search_database, 'x', 1))\n"
        ),
    )
    assert out.splitlines() == [
        "['Weather in Rome, IT: Sunny, 22°C', 'Weather in Pisa, IT: Sunny, 22°C']",
        "[{'id': 0, 'name': 'x 0'}]",
    ]


async def test_using_an_awaitable_as_a_result_states_the_rule(kernel: ToolKernel) -> None:
    misuses = [
        "print(w)",
        "w['key']",
        "len(w)",
        "w + '!'",
        "1 + w",
        "w * 2",
        "-w",
        "w < 3",
        "w == 'Sunny'",
        "int(w)",
        "round(w)",
        "w()",
        "w['key'] = 1",
        "w += 'x'",
        "with w: pass",
        "async for x in w: pass",
        "divmod(w, 2)",
    ]
    for misuse, ename in [
        ("w.upper()", "AttributeError"),
        *[(misuse, "TypeError") for misuse in misuses],
    ]:
        result = await kernel.execute(
            "import asyncio, tools\n"
            "await asyncio.sleep(0)\n"
            "w = tools.get_weather('Oslo', 'NO')\n"
            f"{misuse}\n"
        )
        assert result.error is not None, misuse
        assert result.error.ename == ename, misuse
        assert "tools.get_weather(...) returned an awaitable here" in result.error.evalue
        assert RULE in result.error.evalue
        assert "Write `await tools.get_weather(...)`" in result.error.evalue


async def test_awaitable_calls_still_gather_and_compare_with_each_other(
    kernel: ToolKernel,
) -> None:
    out = await run_ok(
        kernel,
        (
            "import asyncio, tools\n"
            "a, b = tools.get_weather('Oslo', 'NO'), tools.get_weather('Rome', 'IT')\n"
            "print(a == a, a == b, a != b, len({a, b, a}), [a, b].index(b))\n"
            "print(await asyncio.gather(a, b, a))\n"
        ),
    )
    assert out.splitlines() == [
        "True False True 2 1",
        "['Weather in Oslo, NO: Sunny, 22°C', 'Weather in Rome, IT: Sunny, 22°C', "
        "'Weather in Oslo, NO: Sunny, 22°C']",
    ]


async def test_a_call_never_awaited_says_so(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "import asyncio, tools\n"
        "await asyncio.sleep(0)\n"
        "tools.get_weather('Oslo', 'NO')\n"
        "print('next')\n"
    )
    assert result.ok, result.error
    assert [call.name for call in result.tool_calls] == []  # it was never sent
    assert (
        "tools.get_weather(...) was never awaited, so it was never sent to the host"
        in result.stderr
    )
    assert "line 3" in result.stderr or ":3:" in result.stderr  # the line that made it


async def test_an_awaitable_call_cannot_be_awaited_twice(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "import tools\nc = tools.get_weather('Oslo', 'NO')\nawait c\nawait c\n"
    )
    assert result.error is not None and result.error.ename == "RuntimeError"
    assert "already awaited; call the tool again" in result.error.evalue


async def test_wrong_arguments_fail_on_the_callers_line(kernel: ToolKernel) -> None:
    result = await kernel.execute("import tools\ntools.get_weather('Paris')")
    assert result.error is not None
    assert result.error.ename == "ToolArgumentError"
    assert "missing a required argument: 'country'" in result.error.evalue
    assert "the signature is get_weather(city: str, country: str) -> str" in result.error.evalue
    assert "tools.get_weather('Paris')" in result.error.traceback


async def test_tool_error_is_catchable(kernel: ToolKernel) -> None:
    out = await run_ok(
        kernel,
        (
            "from tools import fail, ToolError\n"
            "try:\n"
            "    await fail('boom')\n"
            "except ToolError as e:\n"
            "    print(e.tool, e.error_type, e.message)\n"
        ),
    )
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


async def test_failed_blocking_calls_show_the_users_lines_only(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "from tools import fail\ndef run():\n    return fail('in a def')\nrun()\n"
    )
    assert result.error is not None and result.error.ename == "ToolError"
    traceback = result.error.traceback
    assert "return fail('in a def')" in traceback and "----> 4 run()" in traceback
    assert "concurrent" not in traceback and "futures" not in traceback


async def test_nan_and_infinity_cross_both_ways(make_kernel: Callable[..., ToolKernel]) -> None:
    def echo(values: list[float]) -> list[float]:
        return [*values, float("nan")]

    class Reading(pydantic.BaseModel):
        value: float

    def reading(value: float) -> Reading:
        return Reading(value=value)

    async with make_kernel([echo, reading]) as kernel:
        out = await run_ok(
            kernel,
            (
                "import math, tools\n"
                "print(await tools.echo([math.inf, -math.inf, math.nan]))\n"
                "print(await tools.reading(math.nan))\n"
            ),
        )
    assert out.splitlines() == ["[inf, -inf, nan, nan]", "{'value': nan}"]


async def test_binary_results_get_an_error_that_says_how(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    def blob() -> bytes:
        return b"\xff\xfe\x00"

    def text_bytes() -> bytes:
        return "héllo".encode()

    async with make_kernel([blob, text_bytes]) as kernel:
        result = await kernel.execute("import tools\nprint(tools.text_bytes())\ntools.blob()")
    assert result.stdout == "héllo\n"  # UTF-8 bytes arrive as text
    assert result.error is not None and result.error.ename == "ToolError"
    assert "base64.b64encode(data).decode('ascii')" in result.error.evalue
    assert "pydantic.Base64Bytes" in result.error.evalue


async def test_code_written_for_progtc_runs_unchanged(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async def get_weather(city: str, country: str) -> str:
        return f"{city}: sunny"

    async def slow(tag: str) -> str:
        return f"slow {tag}"

    async with make_kernel([get_weather, slow]) as kernel:
        out = await run_ok(
            kernel,
            (
                "import asyncio, tools\n"
                "from tools import get_weather\n"
                "cities = ['Paris', 'Lyon']\n"
                "coros = [get_weather(c, 'FR') for c in cities]\n"
                "results = await asyncio.gather(*coros)\n"
                "print(results)\n"
                "c = get_weather('Paris', 'FR')\n"
                "print(await c)\n"
                "task = asyncio.create_task(tools.slow('bg'))\n"
                "print('started')\n"
                "print(await task)\n"
                "pending = {c: tools.get_weather(c, 'FR') for c in cities}\n"
                "done = dict(zip(pending, await asyncio.gather(*pending.values())))\n"
                "print(done)\n"
            ),
        )
        # and a ProgrammaticToolset-style `def run()`, reached from a cell that awaits
        out_run = await run_ok(
            kernel,
            (
                "import asyncio, tools\n"
                "def run():\n"
                "    return {'w': tools.get_weather('Nice', 'FR')}\n"
                "async def main():\n"
                "    return run()\n"
                "print(await main())\n"
            ),
        )
    assert out.splitlines() == [
        "['Paris: sunny', 'Lyon: sunny']",
        "Paris: sunny",
        "started",
        "slow bg",
        "{'Paris': 'Paris: sunny', 'Lyon': 'Lyon: sunny'}",
    ]
    assert out_run == "{'w': 'Nice: sunny'}\n"


async def test_a_tool_described_by_a_schema_looks_like_a_function_in_the_kernel(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 3}},
        "required": ["city"],
    }

    async def forecast(arguments: dict[str, Any]) -> str:
        return f"{arguments['city']} for {arguments.get('days', 3)} days"

    tool = Tool.from_schema(
        "forecast", schema, forecast, description="A forecast.", output_schema={"type": "string"}
    )
    async with make_kernel([tool]) as kernel:
        out = await run_ok(
            kernel,
            (
                "import inspect, tools\n"
                "print(inspect.signature(tools.forecast))\n"
                "print(tools.forecast.__doc__)\n"
                "print(await tools.forecast('Oslo'), '|',\n"
                "      await tools.forecast(city='Rome', days=2))\n"
                "try:\n"
                "    await tools.forecast(3)\n"
                "except tools.ToolArgumentError as e:\n"
                "    print(e.message)\n"
            ),
        )
    assert out.splitlines() == [
        "(city: str, days: int = 3) -> str",
        "A forecast.",
        "Oslo for 3 days | Rome for 2 days",
        "city: 3 is not of type 'string'",
    ]


# -- names: every valid tool name is callable, or refused with the reason ------------


async def test_a_tool_may_take_any_name_the_module_does_not_keep(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    def echo(name: str) -> Callable[[], str]:
        return lambda: name

    names = [
        "describe",
        "_hosts",
        "_served",
        "_bridge_for",
        "function",
        "__private",
        "_ipython_display_",
        "catalog_",
        "tools",
    ]
    async with make_kernel({name: echo(name) for name in names}) as kernel:
        out = await run_ok(
            kernel,
            (
                "import tools\n"
                f"for name in {names!r}:\n"
                "    print(name, await getattr(tools, name)())\n"
            ),
        )
        out += await run_ok(
            kernel, ("from tools import describe, _served\nprint(describe(), _served())\n")
        )
        own = await run_ok(
            kernel,
            (
                "import tools\n"
                "dunder = lambda n: n.startswith('__') and n.endswith('__')\n"
                "print(sorted(n for n in vars(tools) if not dunder(n)))\n"
                "print([n for n in dir(type(tools)) if not dunder(n)])\n"
            ),
        )
    assert out.splitlines() == [f"{name} {name}" for name in names] + ["describe _served"]
    # The module keeps exactly the reserved names (hosts refuse them) and dunders.
    assert own.splitlines() == [str(sorted(RESERVED_TOOL_NAMES)), "[]"]


def test_a_reserved_name_is_refused_when_the_tool_is_defined() -> None:
    with pytest.raises(
        ToolDefinitionError,
        match=(
            r"'ToolError' cannot name a tool: in the kernel's tools module it is the "
            r"exception class kernel code catches \(from tools import ToolError\); pass "
            r"tools as a mapping to name it otherwise"
        ),
    ):
        ToolRegistry({"ToolError": len})
    for name in ("__init__", "__getattr__", "__all__", "__spec__"):
        with pytest.raises(ToolDefinitionError, match="it is a dunder name"):
            ToolRegistry({name: len})

    def __dict__() -> None: ...  # a function named like a dunder

    with pytest.raises(ToolDefinitionError, match="'__dict__' cannot name a tool"):
        Tool.from_function(__dict__)
    with pytest.raises(ToolDefinitionError, match="'HostDisconnectedError' cannot name"):
        Tool.from_schema("HostDisconnectedError", {"type": "object"}, lambda arguments: None)


# -- a host that serves no tools -----------------------------------------------------


async def test_a_host_without_tools_says_how_to_give_it_some(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async with make_kernel([]) as kernel:
        for code, ename in [
            ("import tools\ntools.get_weather('Oslo', 'NO')", "AttributeError"),
            ("from tools import get_weather", "ImportError"),
        ]:
            result = await kernel.execute(code)
            assert result.error is not None and result.error.ename == ename
            assert result.error.evalue == (
                "module 'tools' has no tool 'get_weather': the host serves no tools; give it "
                "some: tools=[...] in Python (ToolKernel, ToolBridge, execute_notebook...) or "
                "--tools MODULE_OR_FILE on the command line"
            )


def test_progtc_kernel_run_without_tools_says_how_to_give_them(
    kernel_python: str,
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.py"
    script.write_text("from tools import get_weather\nprint(get_weather('Oslo', 'NO'))\n")
    done = progtc_kernel("run", str(script), "--python", kernel_python)
    assert done.returncode == 1
    assert "the host serves no tools" in done.stderr
    assert "--tools MODULE_OR_FILE on the command line" in done.stderr
