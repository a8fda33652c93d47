"""``progtc-kernel mcp``, driven by the MCP SDK's real stdio client.

The server runs as a user would start it, with host tools from a file and two
upstream MCP servers whose tools scripts call too: ``mcp_upstream.py`` and
server-everything from npm, whose tools are named ``get-sum`` and the like.

No handshake here has a timeout of its own that load could beat: the MCP sessions
wait as long as the test may run (pytest-timeout)."""

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

from .npm_servers import everything_command
from .test_cli import progtc_kernel

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests' / 'mcp_upstream.py'))}"

# The contract's schemas, as it states them.
SCRIPT_INPUT = {
    "properties": {"script": {"type": "string"}},
    "required": ["script"],
    "type": "object",
}
SCRIPT_OUTPUT = {
    "properties": {"returnValue": {"description": "Value of the result.", "type": "string"}},
    "required": ["returnValue"],
    "type": "object",
}


@contextlib.asynccontextmanager
async def mcp_session(*args: str, errlog: Any = sys.stderr) -> AsyncIterator[ClientSession]:
    command = [
        sys.executable,
        "-c",
        "from progtc_kernel.cli import main; raise SystemExit(main())",
        "mcp",
        *args,
    ]
    parameters = StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT))
    async with (
        stdio_client(parameters, errlog=errlog) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@pytest.fixture(scope="module")
def everything() -> str:
    return everything_command()


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp") / "stderr.txt"


@pytest.fixture(scope="module")
async def session(
    kernel_python: str, everything: str, server_log: Path
) -> AsyncIterator[ClientSession]:
    """One server for the module, held by a task of its own: the SDK's task groups
    must be left by the task that entered them."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[ClientSession] = loop.create_future()
    done = asyncio.Event()

    async def hold() -> None:
        with server_log.open("w") as errlog:
            async with mcp_session(
                "--tools",
                "examples/tools.py",
                "--upstream",
                everything,
                "--upstream",
                UPSTREAM,
                "--tool-call-timeout",
                "5",
                "--max-result-chars",
                "50000",
                "--python",
                kernel_python,
                errlog=errlog,
            ) as session:
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
        "ProgrammaticApiExecutionEnvironmentInfo"
    )


async def test_the_environment_lists_host_and_upstream_tools(session: ClientSession) -> None:
    result = await session.call_tool("get_execution_environment", {})
    assert not result.is_error
    assert result.structured_content is not None
    instructions = result.structured_content["returnValue"]["instructions"]
    assert "def get_weather(city: str, country: str) -> str:" in instructions  # host
    assert "def add(a: int, b: int) -> AddOutput:" in instructions  # upstream
    assert "class AddOutput(TypedDict):\n    result: int" in instructions  # its result
    assert '"result":{"title":"Result","type":"integer"}' in instructions  # its output schema


async def test_a_script_calls_host_and_upstream_tools_together(session: ClientSession) -> None:
    result = await script(
        session,
        """\
import asyncio
from tools import add, get_weather, lookup

async def run():
    weather, total, row = await asyncio.gather(
        get_weather("Paris", "France"), add(a=2, b=3), lookup(key="alpha"))
    print("three calls")
    return {"weather": weather, "total": total["result"], "id": row["id"]}
""",
    )
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    value = json.loads(result.structured_content["returnValue"])
    assert value == {"weather": "Sunny, 22°C", "total": 5, "id": 1}
    assert text_of(result) == [
        result.structured_content["returnValue"],
        "The script printed:\nthree calls\n",
    ]


@pytest.mark.parametrize(
    ("code", "starts"),
    [
        ("def run(:\n    pass", "SyntaxError: "),
        ("import os\ndef run():\n    return {}", "ValueError: importing 'os' is not allowed"),
        ("x = 1", "ValueError: the script defines no run() function"),
        ("def run():\n    return 42", "TypeError: run() returned int, not a dict"),
        ("def run():\n    raise LookupError('nothing here')", "LookupError: nothing here"),
        (
            "def run():\n    raise SystemExit(3)",
            "SystemExit: the script raised SystemExit(3): a script cannot exit or interrupt",
        ),
        (
            "def run():\n    raise KeyboardInterrupt",
            "KeyboardInterrupt: the script raised KeyboardInterrupt: a script cannot exit",
        ),
    ],
)
async def test_contract_errors_are_tool_errors_led_by_their_type(
    session: ClientSession, code: str, starts: str
) -> None:
    result = await script(session, code)
    assert result.is_error
    assert text_of(result)[0].startswith(starts), text_of(result)


async def test_an_upstream_that_hangs_fails_its_call_and_the_others_keep_working(
    session: ClientSession,
) -> None:
    # hang() answers only once release() is called: the call can end only by the
    # one timeout that governs it, --tool-call-timeout (5 s here; the command's
    # default is 60 s).
    result = await script(
        session,
        """\
from tools import hang, add, ToolError
def run():
    try:
        hang()
    except ToolError as e:
        return {"error": str(e), "after": add(a=1, b=1)["result"]}
""",
    )
    await script(session, "from tools import release\ndef run():\n    return {'r': release()}")
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    value = json.loads(result.structured_content["returnValue"])
    assert "no result within 5 s (the tool-call timeout)" in value["error"]
    assert value["after"] == 2


def test_one_timeout_governs_a_tool_call_and_it_defaults_to_60_s() -> None:
    from progtc_kernel.cli import _parser
    from progtc_kernel.cli.mcp import toolset_options
    from progtc_kernel.integrations.mcp import toolset_for

    for argv, expected in (
        (["mcp"], 60.0),
        (["mcp", "--tool-call-timeout", "12"], 12.0),
        (["mcp", "--tool-timeout", "12"], 12.0),  # old spellings: still work, and warn
        (["mcp", "--upstream-timeout", "12"], 12.0),
        (["mcp", "--tool-call-timeout", "none"], None),
    ):
        toolset = toolset_for([], **toolset_options(_parser().parse_args(argv)))
        assert toolset.kernel.timeout.tool_call == expected, argv
    assert "--tool-call-timeout S" in progtc_kernel("mcp", "--help").stdout


@pytest.mark.fast
def test_mcp_says_server_as_every_command_does_and_still_takes_kernel_url() -> None:
    from progtc_kernel import RemoteKernel
    from progtc_kernel.cli import _parser
    from progtc_kernel.cli.mcp import toolset_options
    from progtc_kernel.integrations.mcp import toolset_for

    for flag in ("--server", "--kernel-url"):
        argv = ["mcp", flag, "http://127.0.0.1:8888", "--token", "T", "--kernel-name", "py"]
        toolset = toolset_for([], **toolset_options(_parser().parse_args(argv)))
        lifecycle = toolset.kernel.lifecycle
        assert isinstance(lifecycle, RemoteKernel), flag
        assert (lifecycle.server.url, lifecycle.server.token) == ("http://127.0.0.1:8888/", "T")
        assert lifecycle.kernel_name == "py"


# -- server-everything: tools whose names are not Python names ----------------------


async def test_tools_named_with_hyphens_get_python_names_and_show_both(
    session: ClientSession,
) -> None:
    result = await session.call_tool("get_execution_environment", {})
    assert result.structured_content is not None
    instructions = result.structured_content["returnValue"]["instructions"]
    assert "def get_annotated_message(messageType: Literal['error', 'success', 'debug']" in (
        instructions
    )
    assert "Called 'get-annotated-message' by the MCP server" in instructions
    assert "get-annotated-message" not in instructions.split("def ")[0]  # the names to import


async def test_a_script_calls_server_everythings_tools_by_their_python_names(
    session: ClientSession,
) -> None:
    result = await script(
        session,
        """\
from tools import echo, get_sum, get_annotated_message
def run():
    return {"echo": echo(message="hi"), "sum": get_sum(a=2, b=3),
            "note": get_annotated_message(messageType="success", includeImage=False)}
""",
    )
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    value = json.loads(result.structured_content["returnValue"])
    assert value["echo"] == "Echo: hi"
    assert "5" in value["sum"]
    assert "success" in json.dumps(value["note"]).lower()


async def test_a_clash_after_renaming_takes_a_numbered_name_and_says_so(
    session: ClientSession, server_log: Path
) -> None:
    # Both upstreams have a tool named "get-sum": server-everything's, listed first,
    # is get_sum; mcp_upstream.py's is get_sum_2, and the upstream is called by the
    # tool's own name.
    environment = await session.call_tool("get_execution_environment", {})
    assert environment.structured_content is not None
    instructions = environment.structured_content["returnValue"]["instructions"]
    assert "def get_sum_2(a: int, b: int)" in instructions
    assert "'get_sum_2' here ('get_sum' is taken by the MCP server" in instructions
    result = await script(
        session,
        """\
from tools import get_sum_2
def run():
    return get_sum_2(a=2, b=3)
""",
    )
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert json.loads(result.structured_content["returnValue"]) == {"sum": 5, "by": "upstream-test"}
    assert "the tool 'get-sum' of the MCP server" in server_log.read_text()
    assert "is named 'get_sum_2': 'get_sum' is taken by" in server_log.read_text()


async def test_an_upstream_that_crashes_fails_its_tools_and_the_host_tools_keep_working(
    kernel_python: str,
) -> None:
    async with mcp_session(
        "--tools", "examples/tools.py", "--upstream", UPSTREAM, "--python", kernel_python
    ) as session:
        result = await script(
            session,
            """\
from tools import crash, add, get_weather, ToolError
def run():
    errors = []
    for call in (crash, lambda: add(a=1, b=2)):
        try:
            call()
        except ToolError as e:
            errors.append(str(e))
    return {"errors": errors, "weather": get_weather("Paris", "France")}
""",
        )
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
        done.stderr
    )


async def test_a_large_result_is_cut_and_the_cut_is_said(session: ClientSession) -> None:
    result = await script(session, "def run():\n    return {'rows': ['x' * 100] * 5000}")
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    text = result.structured_content["returnValue"]
    assert text.startswith('{"rows": ["xxxx')
    assert text.endswith(
        "more characters of the returned JSON were cut: return less "
        "(filter, count or summarise in the script)]"
    )
    assert len(text) < 50_200


async def test_the_instructions_promise_printed_text_which_comes_back(
    session: ClientSession,
) -> None:
    result = await session.call_tool("get_execution_environment", {})
    assert result.structured_content is not None
    assert (
        "Text the script prints is returned to you after the return value"
        in (result.structured_content["returnValue"]["instructions"])
    )
