"""``progtc-kernel mcp``, driven by the MCP SDK's real stdio client.

The server runs as a user would start it, with host tools from a file and an
upstream MCP server (``mcp_upstream.py``) whose tools scripts call too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP SDK is an optional extra")

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from .test_cli import progtc_kernel

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests' / 'mcp_upstream.py'))}"

# The contract's schemas, as it states them.
SCRIPT_INPUT = {"properties": {"script": {"type": "string"}}, "required": ["script"],
                "type": "object"}
SCRIPT_OUTPUT = {"properties": {"returnValue": {"description": "Value of the result.",
                                                "type": "string"}},
                 "required": ["returnValue"], "type": "object"}


@contextlib.asynccontextmanager
async def mcp_session(*args: str) -> AsyncIterator[ClientSession]:
    command = [sys.executable, "-c", "from progtc_kernel.cli import main; raise SystemExit(main())",
               "mcp", *args]
    parameters = StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT))
    async with stdio_client(parameters, errlog=sys.stderr) as (read, write), \
            ClientSession(read, write, read_timeout_seconds=120) as session:
        await session.initialize()
        yield session


@pytest.fixture(scope="module")
async def session(kernel_python: str) -> AsyncIterator[ClientSession]:
    """One server for the module, held by a task of its own: the SDK's task groups
    must be left by the task that entered them."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[ClientSession] = loop.create_future()
    done = asyncio.Event()

    async def hold() -> None:
        async with mcp_session("--tools", "examples/tools.py", "--upstream", UPSTREAM,
                               "--upstream-timeout", "5", "--python", kernel_python) as session:
            opened.set_result(session)
            await done.wait()

    holder = asyncio.ensure_future(hold())
    either: set[asyncio.Future[Any]] = {holder, opened}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if holder.done():
        holder.result()  # it failed to open: say why
    yield opened.result()
    done.set()
    await holder


def text_of(result: CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


async def script(session: ClientSession, code: str) -> CallToolResult:
    return await session.call_tool("execute_tool_script", {"script": code})


async def test_the_two_tools_carry_the_contracts_schemas(session: ClientSession) -> None:
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert sorted(tools) == ["execute_tool_script", "get_execution_environment"]
    assert tools["execute_tool_script"].input_schema == SCRIPT_INPUT
    assert tools["execute_tool_script"].output_schema == SCRIPT_OUTPUT
    assert tools["get_execution_environment"].input_schema == {"type": "object"}
    environment = tools["get_execution_environment"].output_schema
    assert environment is not None
    assert environment["required"] == ["returnValue"]
    assert environment["properties"]["returnValue"]["title"] == (
        "ProgrammaticApiExecutionEnvironmentInfo")


async def test_the_environment_lists_host_and_upstream_tools(session: ClientSession) -> None:
    result = await session.call_tool("get_execution_environment", {})
    assert not result.is_error
    assert result.structured_content is not None
    instructions = result.structured_content["returnValue"]["instructions"]
    assert "def get_weather(city: str, country: str) -> str:" in instructions  # host
    assert "def add(a: int, b: int) -> dict:" in instructions  # upstream
    assert '"result":{"title":"Result","type":"integer"}' in instructions  # its output schema


async def test_a_script_calls_host_and_upstream_tools_together(session: ClientSession) -> None:
    result = await script(session, """\
import asyncio
from tools import add, get_weather, lookup

async def run():
    weather, total, row = await asyncio.gather(
        get_weather("Paris", "France"), add(a=2, b=3), lookup(key="alpha"))
    print("three calls")
    return {"weather": weather, "total": total["result"], "id": row["id"]}
""")
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    value = json.loads(result.structured_content["returnValue"])
    assert value == {"weather": "Sunny, 22°C", "total": 5, "id": 1}
    assert text_of(result) == [result.structured_content["returnValue"],
                               "The script printed:\nthree calls\n"]


@pytest.mark.parametrize(("code", "starts"), [
    ("def run(:\n    pass", "SyntaxError: "),
    ("import os\ndef run():\n    return {}", "ValueError: importing 'os' is not allowed"),
    ("x = 1", "ValueError: the script defines no run() function"),
    ("def run():\n    return 42", "TypeError: run() returned int, not a dict"),
    ("def run():\n    raise LookupError('nothing here')", "LookupError: nothing here"),
])
async def test_contract_errors_are_tool_errors_led_by_their_type(
        session: ClientSession, code: str, starts: str) -> None:
    result = await script(session, code)
    assert result.is_error
    assert text_of(result)[0].startswith(starts), text_of(result)


async def test_an_upstream_that_hangs_fails_its_call_and_the_others_keep_working(
        session: ClientSession) -> None:
    result = await script(session, """\
from tools import hang, add, ToolError
def run():
    try:
        hang(seconds=30)
    except ToolError as e:
        return {"error": str(e), "after": add(a=1, b=1)["result"]}
""")
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    value = json.loads(result.structured_content["returnValue"])
    assert "did not answer within 5 s" in value["error"]
    assert value["after"] == 2


async def test_an_upstream_that_crashes_fails_its_tools_and_the_host_tools_keep_working(
        kernel_python: str) -> None:
    async with mcp_session("--tools", "examples/tools.py", "--upstream", UPSTREAM,
                           "--python", kernel_python) as session:
        result = await script(session, """\
from tools import crash, add, get_weather, ToolError
def run():
    errors = []
    for call in (crash, lambda: add(a=1, b=2)):
        try:
            call()
        except ToolError as e:
            errors.append(str(e))
    return {"errors": errors, "weather": get_weather("Paris", "France")}
""")
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        value: dict[str, Any] = json.loads(result.structured_content["returnValue"])
        assert len(value["errors"]) == 2
        assert all("is gone (it exited or crashed)" in error for error in value["errors"][1:])
        assert value["weather"] == "Sunny, 22°C"


def test_a_name_offered_twice_is_refused_at_start(tmp_path: Path) -> None:
    clash = tmp_path / "clash.py"
    clash.write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    done = progtc_kernel("mcp", "--tools", str(clash), "--upstream", UPSTREAM, stdin="")
    assert done.returncode == 2
    assert "two tools are named 'add': one in the host tools, one in the MCP server" in (
        done.stderr)
