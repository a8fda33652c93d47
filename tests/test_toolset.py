"""ProgrammaticToolset: each rule of the contract (``../shared/seeds/programmatic-
toolset.txt``), on a real kernel."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import jsonschema
import pydantic
import pytest

from progtc_kernel import LocalKernel, ProgrammaticToolset, ScriptError, Tool, ToolKernel
from progtc_kernel.exceptions import ToolDefinitionError
from progtc_kernel.host.naming import ForeignTool, foreign_tools, python_name

# The contract's schemas, as it states them.
ENVIRONMENT_SCHEMA = {
    "properties": {
        "instructions": {"type": "string"},
        "language": {"type": "string"},
        "supported_modules": {
            "items": {
                "properties": {"description": {"type": "string"}, "name": {"type": "string"}},
                "required": ["description", "name"],
                "type": "object",
            },
            "type": "array",
        },
    },
    "required": ["instructions", "supported_modules", "language"],
    "type": "object",
}


class Hotel(pydantic.BaseModel):
    name: str
    stars: int


async def get_weather(city: str, country: str) -> str:
    """Current weather for a city."""
    return f"Sunny in {city}, {country}"


def find_hotels(city: str, limit: int = 3) -> list[Hotel]:
    """Hotels in a city, best first."""
    return [Hotel(name=f"{city} Hotel {i}", stars=5 - i) for i in range(limit)]


TOOLS = [get_weather, find_hotels]


@pytest.fixture(scope="module")
async def toolset(kernel_python: str) -> AsyncIterator[ProgrammaticToolset]:
    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    async with ProgrammaticToolset(TOOLS, kernel=kernel, max_tool_calls=50, timeout=60) as toolset:
        yield toolset


@pytest.fixture
def make_toolset(kernel_python: str) -> Callable[..., ProgrammaticToolset]:
    def make(tools: Any = TOOLS, **options: Any) -> ProgrammaticToolset:
        return ProgrammaticToolset(tools, kernel=LocalKernel(python=kernel_python), **options)

    return make


async def run(toolset: ProgrammaticToolset, script: str) -> Any:
    return json.loads(await toolset.execute_tool_script(script))


# -- get_execution_environment ----------------------------------------------------------


async def test_the_environment_matches_the_contracts_schema(toolset: ProgrammaticToolset) -> None:
    env = await toolset.get_execution_environment()
    jsonschema.validate(env, ENVIRONMENT_SCHEMA)
    assert env["language"] == "python"
    assert {"name": "json", "description": "encode and decode JSON"} in env["supported_modules"]


async def test_the_instructions_hold_typed_stubs_and_output_schemas(
    toolset: ProgrammaticToolset,
) -> None:
    instructions = (await toolset.get_execution_environment())["instructions"]
    assert "def get_weather(city: str, country: str) -> str:" in instructions
    assert '"""Current weather for a city.' in instructions
    assert "def find_hotels(city: str, limit: int = 3) -> list[Hotel]:" in instructions
    schema = Hotel.model_json_schema()
    assert json.dumps(schema["properties"]["stars"]).replace(" ", "") in instructions
    for rule in (
        "def run()",
        "async def run()",
        "asyncio.gather",
        "ToolError",
        "SyntaxError",
        "ValueError",
        "TypeError",
        "prints",
        "at most 50 tool calls",
        "60 s",
    ):
        assert rule in instructions, rule


# -- execute_tool_script: running -----------------------------------------------------


async def test_a_plain_run_calls_tools_without_await(toolset: ProgrammaticToolset) -> None:
    assert await run(
        toolset,
        """\
from tools import find_hotels, get_weather

def run():
    best = find_hotels("Oslo")[0]
    return {"weather": get_weather("Oslo", "NO"), "hotel": best["name"]}
""",
    ) == {"weather": "Sunny in Oslo, NO", "hotel": "Oslo Hotel 0"}


async def test_an_async_run_gathers_tool_calls(toolset: ProgrammaticToolset) -> None:
    assert await run(
        toolset,
        """\
import asyncio
from tools import get_weather

async def run():
    cities = ["Oslo", "Rome", "Lima"]
    weather = await asyncio.gather(*(get_weather(c, "X") for c in cities))
    return dict(zip(cities, weather))
""",
    ) == {"Oslo": "Sunny in Oslo, X", "Rome": "Sunny in Rome, X", "Lima": "Sunny in Lima, X"}


async def test_printed_output_comes_back_beside_the_value(toolset: ProgrammaticToolset) -> None:
    result = await toolset.run_script("def run():\n    print('thinking')\n    return {'a': 1}")
    assert (result.value, result.stdout) == ({"a": 1}, "thinking\n")


async def test_each_script_starts_from_a_clean_namespace(toolset: ProgrammaticToolset) -> None:
    await run(toolset, "leftover = 1\ndef run():\n    return {}")
    with pytest.raises(NameError, match="leftover"):
        await run(toolset, "def run():\n    return {'x': leftover}")


async def test_names_can_be_kept_across_scripts(make_toolset: Callable[..., Any]) -> None:
    async with make_toolset(fresh_namespace=False) as toolset:
        await run(toolset, "seen = ['first']\ndef run():\n    return {}")
        assert await run(toolset, "def run():\n    return {'seen': seen}") == {"seen": ["first"]}


async def test_the_kernels_own_namespace_is_left_alone(toolset: ProgrammaticToolset) -> None:
    await run(toolset, "import json\nsecret = 42\ndef run():\n    return {}")
    names = await toolset.kernel.execute("print('secret' in dir(), 'run' in dir())")
    assert names.stdout == "False False\n"


# -- execute_tool_script: the contract's errors -------------------------------------------


async def test_invalid_syntax_is_a_syntax_error_with_its_line(toolset: ProgrammaticToolset) -> None:
    with pytest.raises(SyntaxError, match=r"fix the syntax.*\(line 2: `return {'a': }`\)"):
        await run(toolset, "def run():\n    return {'a': }\n")


@pytest.mark.parametrize(
    "script",
    [
        "import os\ndef run():\n    return {}",
        "from subprocess import run as sh\ndef run():\n    return {}",
        "def run():\n    return {'p': __import__('os').getcwd()}",
        "import importlib\ndef run():\n    return {}",
        "def run():\n    name = 'o' + 's'\n    return {'p': __import__(name).getcwd()}",
        "def run():\n    exec('import socket')\n    return {}",
    ],
)
async def test_importing_an_unsupported_module_is_a_value_error(
    toolset: ProgrammaticToolset, script: str
) -> None:
    with pytest.raises(ValueError, match=r"is not allowed: use only the supported.*\(line \d"):
        await run(toolset, script)


async def test_supported_modules_and_their_submodules_import(toolset: ProgrammaticToolset) -> None:
    assert await run(
        toolset,
        """\
import collections.abc, json, math
from datetime import date
def run():
    return {"n": math.floor(2.5), "d": date(2026, 1, 2).isoformat(),
            "m": isinstance({}, collections.abc.Mapping), "j": json.dumps([1])}
""",
    ) == {"n": 2, "d": "2026-01-02", "m": True, "j": "[1]"}


async def test_the_supported_modules_are_configurable(make_toolset: Callable[..., Any]) -> None:
    async with make_toolset(supported_modules={"math": "maths"}) as toolset:
        env = await toolset.get_execution_environment()
        assert env["supported_modules"] == [{"name": "math", "description": "maths"}]
        with pytest.raises(ValueError, match="'json' is not allowed"):
            await run(toolset, "import json\ndef run():\n    return {}")


async def test_a_script_without_run_is_a_value_error(toolset: ProgrammaticToolset) -> None:
    with pytest.raises(ValueError, match=r"defines no run\(\) function: define `def run\(\):`"):
        await run(toolset, "result = {'a': 1}")


@pytest.mark.parametrize(
    ("returned", "said"),
    [
        ("[1, 2]", "returned list, not a dict"),
        ("{'w': __import__('tools').get_weather('a', 'b')}", "never awaited: in `async def run"),
        ("{'x': {1, 2}}", "that JSON cannot carry"),
        ("{'x': float('inf')}", "that JSON cannot carry"),
    ],
)
async def test_run_returning_no_json_dict_is_a_type_error(
    toolset: ProgrammaticToolset, returned: str, said: str
) -> None:
    with pytest.raises(TypeError, match=said):
        await run(toolset, f"async def run():\n    return {returned}")


async def test_the_scripts_own_exception_is_raised_with_its_line(
    toolset: ProgrammaticToolset,
) -> None:
    with pytest.raises(ZeroDivisionError, match=r"line 3: `return \{'x': 1 / n\}`"):
        await run(toolset, "def run():\n    n = 0\n    return {'x': 1 / n}")


async def test_a_tool_called_with_bad_arguments_names_its_signature(
    make_toolset: Callable[..., Any],
) -> None:
    # Unchecked: the type checker would refuse the script before it runs.
    async with make_toolset(check_types=False) as toolset:
        with pytest.raises(ScriptError) as raised:
            await run(
                toolset,
                "from tools import find_hotels\ndef run():\n    return {'h': find_hotels(limit=2)}",
            )
    assert raised.value.type_name == "ToolArgumentError"
    assert "find_hotels(city: str, limit: int = 3) -> list[Hotel]" in str(raised.value)
    assert "line 3" in str(raised.value)


async def test_a_failing_tool_can_be_caught_in_the_script(make_toolset: Callable[..., Any]) -> None:
    def lookup(key: str) -> str:
        """Look a key up."""
        raise KeyError(key)

    async with make_toolset([lookup]) as toolset:
        assert await run(
            toolset,
            """\
from tools import lookup, ToolError
def run():
    try:
        return {"value": lookup("k")}
    except ToolError as e:
        return {"error": str(e)}
""",
        ) == {"error": "tool 'lookup' failed: KeyError: 'k'"}


# -- limits ----------------------------------------------------------------------------


async def test_the_call_budget_stops_a_script_that_calls_too_much(
    make_toolset: Callable[..., Any],
) -> None:
    async with make_toolset(max_tool_calls=3) as toolset:
        with pytest.raises(ScriptError, match="already made 3 tool calls, its limit"):
            await run(
                toolset,
                "from tools import get_weather\n"
                "def run():\n    return {'w': [get_weather(c, 'X') "
                "for c in 'abcd']}",
            )
        assert (
            await run(
                toolset,
                "from tools import get_weather\n"  # a new script: 3 again
                "def run():\n    return {'w': [get_weather(c, 'X') "
                "for c in 'abc']}",
            )
            != {}
        )


async def test_a_script_that_never_returns_times_out_and_the_kernel_stays_usable(
    make_toolset: Callable[..., Any],
) -> None:
    async with make_toolset(timeout=1) as toolset:
        with pytest.raises(TimeoutError, match="ran for more than 1 s and was stopped"):
            await run(toolset, "def run():\n    while True:\n        pass")
        assert await run(toolset, "def run():\n    return {'ok': True}") == {"ok": True}


async def test_a_flood_of_printing_is_cut_and_says_so(make_toolset: Callable[..., Any]) -> None:
    async with make_toolset(max_output_chars=1000) as toolset:
        result = await toolset.run_script(
            "def run():\n    print('x' * 50_000_000)\n    return {'done': True}"
        )
        assert result.value == {"done": True}
        assert result.stdout.startswith("x" * 1000 + "\n[... 49,999,001 more characters")


async def test_a_large_result_is_cut_and_the_cut_is_said(make_toolset: Callable[..., Any]) -> None:
    async with make_toolset(max_result_chars=1000) as toolset:
        result = await toolset.run_script("def run():\n    return {'big': 'y' * 5000}")
        assert result.value == {"big": "y" * 5000}  # the whole value, for the host
        assert result.json_text == (
            '{"big": "' + "y" * 991 + "\n[... 4,011 more characters of the returned JSON "
            "were cut: return less (filter, count or summarise in the script)]"
        )
        assert (
            await toolset.execute_tool_script("def run():\n    return {'big': 'y' * 5000}")
            == result.json_text
        )


async def test_the_instructions_say_what_the_caller_gets_of_printed_text(
    make_toolset: Callable[..., Any],
) -> None:
    # execute_tool_script returns only the JSON: the instructions must not promise
    # printed text, unless the caller says it passes run_script's stdout on.
    async with make_toolset() as toolset:
        instructions = (await toolset.get_execution_environment())["instructions"]
        assert "Text the script prints is not returned to you" in instructions
        assert (
            await toolset.execute_tool_script("def run():\n    print('lost')\n    return {'a': 1}")
            == '{"a": 1}'
        )
    async with make_toolset(returns_printed_text=True) as toolset:
        instructions = (await toolset.get_execution_environment())["instructions"]
        assert "Text the script prints is returned to you after the return value" in (instructions)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "def run():\n    raise SystemExit(7)",
            "the script raised SystemExit(7): a script "
            "cannot exit or interrupt the kernel; return a dict from run()",
        ),
        ("def run():\n    raise SystemExit", "the script raised SystemExit: a script"),
        ("def run():\n    raise KeyboardInterrupt", "the script raised KeyboardInterrupt: a"),
    ],
)
async def test_a_script_that_exits_is_told_so(
    toolset: ProgrammaticToolset, code: str, message: str
) -> None:
    with pytest.raises(ScriptError, match=re.escape(message)):
        await toolset.execute_tool_script(code)
    assert await run(toolset, "def run():\n    return {'ok': True}") == {"ok": True}


async def test_tools_defined_by_schema_show_as_stubs(make_toolset: Callable[..., Any]) -> None:
    async def lookup(arguments: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"price": 12.5 * arguments["qty"]}

    price = Tool.from_schema(
        "price",
        {"type": "object", "properties": {"qty": {"type": "integer"}}, "required": ["qty"]},
        lookup,
        description="Price of qty items.",
        output_schema={"type": "object", "properties": {"price": {"type": "number"}}},
    )
    async with make_toolset([price]) as toolset:
        instructions = (await toolset.get_execution_environment())["instructions"]
        assert "def price(qty: int) -> PriceResult:" in instructions
        assert "class PriceResult(TypedDict):\n    price: NotRequired[float]" in instructions
        assert '{"properties":{"price":{"type":"number"}},"type":"object"}' in instructions
        assert await run(
            toolset, "from tools import price\ndef run():\n    return price(qty=2)"
        ) == {"price": 25.0}


def test_the_code_mode_example_runs() -> None:
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "code_mode.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "def get_weather(city: str, country: str) -> str:" in done.stdout
    assert '{"rainy": ["London"], "cheapest_gadget": "Travel adapter", "usd": 19.99}' in done.stdout


# -- tools named elsewhere: get-sum, files.read ------------------------------------


def named_elsewhere(name: str, source: str = "the MCP server 'demo'") -> ForeignTool:
    """A tool called by ``name`` where it comes from; it answers with that name."""

    def call(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"called": name, **arguments}

    return ForeignTool(
        name,
        {"type": "object", "properties": {"x": {"type": "integer"}}},
        call,
        source,
        description=f"The {name} tool.",
    )


@pytest.mark.fast
def test_names_that_are_not_python_names_are_spelled_in_python() -> None:
    assert [
        python_name(name)
        for name in (
            "get-annotated-message",
            "files.read",
            "3d-view",
            "class",
            "ok_name",
            "",
            "a b/c",
        )
    ] == [
        "get_annotated_message",
        "files_read",
        "tool_3d_view",
        "class_",
        "ok_name",
        "tool",
        "a_b_c",
    ]


@pytest.mark.fast
def test_a_clash_after_renaming_is_resolved_in_order_and_a_python_name_keeps_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tools = foreign_tools(
        [
            named_elsewhere("get-sum"),
            named_elsewhere("get.sum"),
            named_elsewhere("get_sum", "the MCP server 'other'"),
        ],
        taken=["lookup"],
    )
    assert [tool.name for tool in tools] == ["get_sum_2", "get_sum_3", "get_sum"]
    assert tools[0].description == (
        "Called 'get-sum' by the MCP server 'demo'; 'get_sum_2' here ('get_sum' is taken "
        "by the MCP server 'other').\n\nThe get-sum tool."
    )
    assert "the tool 'get.sum' of the MCP server 'demo' is named 'get_sum_3'" in caplog.text
    with pytest.raises(
        ToolDefinitionError,
        match=("two tools are named 'lookup': one in the host tools, one in the MCP server"),
    ):
        foreign_tools([named_elsewhere("lookup")], taken=["lookup"])


async def test_a_renamed_tool_is_called_by_its_own_name(make_toolset: Callable[..., Any]) -> None:
    tools = foreign_tools([named_elsewhere("get-sum"), named_elsewhere("get_sum")])
    async with make_toolset(tools) as toolset:
        instructions = (await toolset.get_execution_environment())["instructions"]
        assert "def get_sum_2(x: int = ...)" in instructions
        assert "Called 'get-sum' by the MCP server 'demo'; 'get_sum_2' here" in instructions
        assert await run(
            toolset, "from tools import get_sum_2\ndef run():\n    return get_sum_2(x=1)"
        ) == {"called": "get-sum", "x": 1}
