"""``progtc-kernel mcp --upstream NAME=COMMAND``: each named upstream's tools in a
namespace of their own (``from tools.everything import get_sum``), so that two
servers may offer the same tool; and what upstream tools return, as Python values.
Against server-everything from npm and the Python upstream (``mcp_upstream.py``),
through the MCP SDK's client."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP SDK is an optional extra")

from mcp import ClientSession

from progtc_kernel import LocalKernel

from .npm_servers import everything_command
from .test_cli import progtc_kernel
from .test_mcp import UPSTREAM, mcp_session, script, text_of


@pytest.fixture(scope="module")
async def session(
    kernel_python: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ClientSession]:
    """Two named upstreams that both offer ``get-sum``, and an unnamed one (flat)."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[ClientSession] = loop.create_future()
    done = asyncio.Event()
    log = tmp_path_factory.mktemp("mcp-namespaces") / "stderr.txt"

    async def hold() -> None:
        with log.open("w") as errlog:
            async with mcp_session(
                "--upstream",
                f"everything={everything_command()}",
                "--upstream",
                f"mine={UPSTREAM}",
                "--upstream",
                UPSTREAM,
                "--list-tools-above",
                "never",
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


async def value_of(session: ClientSession, code: str) -> Any:
    result = await script(session, code)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return json.loads(result.structured_content["returnValue"])


async def instructions_of(session: ClientSession) -> str:
    result = await session.call_tool("get_execution_environment", {})
    assert result.structured_content is not None
    return str(result.structured_content["returnValue"]["instructions"])


# -- namespaces ---------------------------------------------------------------------


async def test_two_servers_offering_the_same_tool_each_keep_it_in_their_namespace(
    session: ClientSession,
) -> None:
    value = await value_of(
        session,
        """\
import tools
from tools.everything import get_sum

def run():
    return {"everything": get_sum(a=2, b=3), "mine": tools.mine.get_sum(a=2, b=3)}
""",
    )
    assert "5" in value["everything"]  # server-everything answers in text
    assert value["mine"] == {"sum": 5, "by": "upstream-test"}


async def test_an_unnamed_upstream_keeps_its_flat_names(session: ClientSession) -> None:
    value = await value_of(
        session, "from tools import add, get_sum\ndef run():\n    return add(a=1, b=2)"
    )
    assert value == {"result": 3}


async def test_the_stubs_show_each_namespace_and_how_to_import_it(
    session: ClientSession,
) -> None:
    instructions = await instructions_of(session)
    assert "# tools.everything: from tools.everything import " in instructions
    assert "# tools.mine: from tools.mine import add" in instructions
    assert instructions.count("def get_sum(a: ") == 3  # flat, mine, everything
    # server-everything's output schema types its structured content in the stub
    assert '"temperature":{"description":"Temperature in celsius","type":"number"}' in (
        instructions
    )


async def test_the_catalog_names_namespaced_tools_as_scripts_import_them(
    session: ClientSession,
) -> None:
    value = await value_of(
        session,
        """\
from tools import catalog

def run():
    found = catalog.search("sum")
    return {"found": found, "stub": catalog.describe("mine.get_sum")}
""",
    )
    assert {"everything.get_sum", "mine.get_sum", "get_sum"} <= set(value["found"])
    assert value["stub"].startswith("def get_sum(a: int, b: int)")


def test_a_reserved_namespace_is_refused_at_start_with_the_reason() -> None:
    done = progtc_kernel("mcp", "--upstream", f"catalog={UPSTREAM}", stdin="")
    assert done.returncode == 2
    assert "'catalog.add' cannot name a tool: in the kernel's tools module it is the tool " in (
        done.stderr
    )


# -- what upstream tools return ----------------------------------------------------------


async def test_structured_content_arrives_as_data(session: ClientSession) -> None:
    value = await value_of(
        session,
        """\
from tools.everything import get_structured_content

def run():
    weather = get_structured_content(location="Chicago")
    return {"weather": weather, "type": type(weather).__name__}
""",
    )
    assert value["type"] == "dict"
    assert set(value["weather"]) == {"temperature", "conditions", "humidity"}


async def test_several_blocks_arrive_as_a_list_and_an_image_as_base64(
    session: ClientSession,
) -> None:
    value = await value_of(
        session,
        """\
import base64
from tools.everything import get_tiny_image

def run():
    before, image, after = get_tiny_image()
    png = base64.b64decode(image["data"])
    return {"texts": [before, after], "type": image["type"], "mime": image["mime_type"],
            "png": png[:4] == b"\\x89PNG"}
""",
    )
    assert value == {
        "texts": ["Here's the image you requested:", "The image above is the MCP logo."],
        "type": "image",
        "mime": "image/png",
        "png": True,
    }


async def test_resource_links_arrive_as_dicts(session: ClientSession) -> None:
    value = await value_of(
        session,
        """\
from tools.everything import get_resource_links

def run():
    intro, *links = get_resource_links(count=2)
    return {"intro": type(intro).__name__, "links": links}
""",
    )
    assert value["intro"] == "str"
    assert [link["type"] for link in value["links"]] == ["resource_link", "resource_link"]
    assert all(link["uri"].startswith("demo://resource/") for link in value["links"])


async def test_an_error_result_raises_tool_error_with_the_servers_message(
    session: ClientSession,
) -> None:
    value = await value_of(
        session,
        """\
from tools import ToolError
from tools.mine import lookup

def run():
    try:
        lookup(key="gamma")
    except ToolError as exc:
        return {"error": str(exc)}
""",
    )
    # the Python SDK's server says no more than this of the KeyError
    assert value == {
        "error": "tool 'mine.lookup' failed: UpstreamError: Error executing tool lookup"
    }


def test_a_text_result_is_a_str_and_json_text_stays_text() -> None:
    from mcp.types import CallToolResult, TextContent

    from progtc_kernel.integrations.mcp import value_of as converted

    assert converted(CallToolResult(content=[TextContent(type="text", text='{"a": 1}')])) == (
        '{"a": 1}'
    )
    assert converted(CallToolResult(content=[])) is None


def test_the_upstream_option_reads_a_name_only_before_the_command(tmp_path: Path) -> None:
    from progtc_kernel.integrations.mcp import upstream_of

    assert upstream_of("github=npx -y server") == ("github", "npx -y server")
    assert upstream_of("npx -y server --flag=x") == (None, "npx -y server --flag=x")
    assert upstream_of("python -c 'a=1'") == (None, "python -c 'a=1'")


# -- CodeModeToolset(toolsets={name: toolset}) -------------------------------------------


async def test_code_mode_toolsets_by_name_are_namespaces(kernel_python: str) -> None:
    pytest.importorskip("pydantic_ai", reason="pydantic-ai needs Python 3.11+")
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from progtc_kernel.integrations.pydantic_ai import CodeModeToolset

    from .npm_servers import everything_binary
    from .test_pydantic_ai import UPSTREAM as PYTHON_UPSTREAM
    from .test_pydantic_ai import returns

    def server(command: str, args: list[str], id: str) -> MCPToolset:
        return MCPToolset(StdioTransport(command=command, args=args), id=id, init_timeout=None)

    script = """\
import tools
from tools.everything import get_sum

def run():
    return {"everything": get_sum(a=2, b=3), "mine": tools.mine.get_sum(a=2, b=3)}
"""

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("get_execution_environment", {})])
        if step == 1:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    toolset = CodeModeToolset(
        toolsets={
            "everything": server(str(everything_binary()), ["stdio"], "everything"),
            "mine": server(sys.executable, [str(PYTHON_UPSTREAM)], "mine"),
        },
        kernel=LocalKernel(python=kernel_python),
    )
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Sums?")

    environment = returns(result.all_messages())[0].content
    assert isinstance(environment, dict)
    assert "# tools.mine: from tools.mine import " in environment["instructions"]
    value = json.loads(result.output)
    assert "5" in json.dumps(value["everything"])
    assert value["mine"] == {"sum": 5, "by": "upstream-test"}
