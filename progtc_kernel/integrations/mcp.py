"""``ProgrammaticToolset`` over MCP, and other MCP servers' tools as host tools.

* ``serve_stdio(toolset)``: an MCP server on stdin/stdout with the contract's two
  tools and their input and output schemas. A script's value comes back as
  ``{"returnValue": "<JSON>"}`` (with the JSON as text too); what it printed as a
  second text block; a contract error as a tool error whose text starts with the
  exception's type (``ValueError: ...``).
* ``upstream_tools(stack, command)``: connects to an MCP server ("code mode" for
  any of them) and offers its tools as host tools, with their input and output
  schemas in the stubs, under Python names (``get-annotated-message`` is
  ``get_annotated_message``; the stub names both, the server is called by its
  own). A server that crashes fails its own tools with a clear error; one that
  hangs fails its call at the kernel's tool-call timeout; the others keep working.

Needs the ``mcp`` extra (the MCP SDK, 2.x); without it, importing this module
names the ``pip install`` that fixes it.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from .._install import missing_extra

try:
    from mcp import ClientSession, StdioServerParameters, stdio_client
    from mcp.server import Server, ServerRequestContext
    from mcp.server.stdio import stdio_server
    from mcp.shared.exceptions import MCPError
    from mcp.types import (
        CONNECTION_CLOSED,
        REQUEST_TIMEOUT,
        CallToolRequestParams,
        CallToolResult,
        ContentBlock,
        ListToolsResult,
        PaginatedRequestParams,
        TextContent,
    )
    from mcp.types import Tool as MCPTool
except ImportError as exc:
    raise missing_extra("mcp", exc, "progtc-kernel's MCP server needs the MCP SDK") from exc

from .._version import __version__
from ..exceptions import UpstreamError, UpstreamStartError
from ..host.naming import ForeignTool, foreign_tools
from ..host.tool_kernel import ToolKernel
from ..host.tools import Tool, ToolRegistry
from ..timeouts import MCP_TIMEOUT, USE_DEFAULT, TimeoutLike, resolve
from ..toolset import ProgrammaticToolset
from ..toolset.environment import ENVIRONMENT_SCHEMA
from ..toolset.toolset import MAX_RESULT_CHARS, error_text

# The contract's schemas (../shared/seeds/programmatic-toolset.txt).
SCRIPT_INPUT = {
    "type": "object",
    "properties": {"script": {"type": "string"}},
    "required": ["script"],
}
SCRIPT_OUTPUT = {
    "type": "object",
    "properties": {"returnValue": {"type": "string", "description": "Value of the result."}},
    "required": ["returnValue"],
}
ENVIRONMENT_INPUT = {"type": "object"}
ENVIRONMENT_OUTPUT = {
    "type": "object",
    "properties": {"returnValue": ENVIRONMENT_SCHEMA},
    "required": ["returnValue"],
}

EXECUTE_DESCRIPTION = """\
Execute a Python script against the toolset APIs.
Use this to batch multiple tool calls into a single script execution, reducing
round-trips and context usage.
IMPORTANT: Available modules and usage instructions are described by the value
returned by `get_execution_environment`. You MUST call `get_execution_environment`
once in the conversation before using this tool, and read its `instructions`.
The script must define a `run()` function that returns a dict; its JSON comes back
as `returnValue`. Raises SyntaxError for invalid syntax, ValueError for a disallowed
import or a missing `run()`, TypeError when `run()` does not return a dict, and any
unhandled exception the script raises."""
ENVIRONMENT_DESCRIPTION = """\
Get details about the execution environment: instructions on how to write scripts,
the modules that may be imported, the script entrypoint and its signature, and a
typed stub (with its output schema) for every tool a script can call."""


def make_server(toolset: ProgrammaticToolset) -> Server:
    """The MCP server offering ``toolset``'s two tools."""
    tools = [
        MCPTool(
            name="get_execution_environment",
            description=ENVIRONMENT_DESCRIPTION,
            input_schema=ENVIRONMENT_INPUT,
            output_schema=ENVIRONMENT_OUTPUT,
        ),
        MCPTool(
            name="execute_tool_script",
            description=EXECUTE_DESCRIPTION,
            input_schema=SCRIPT_INPUT,
            output_schema=SCRIPT_OUTPUT,
        ),
    ]

    async def on_list_tools(
        ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=tools)

    async def on_call_tool(
        ctx: ServerRequestContext, params: CallToolRequestParams
    ) -> CallToolResult:
        try:
            return await _call(toolset, params.name, params.arguments or {})
        except Exception as exc:  # the contract's errors, as tool errors the model reads
            return CallToolResult(
                is_error=True, content=[TextContent(type="text", text=error_text(exc))]
            )

    return Server(
        "progtc-kernel", version=__version__, on_list_tools=on_list_tools, on_call_tool=on_call_tool
    )


async def _call(
    toolset: ProgrammaticToolset, name: str, arguments: dict[str, Any]
) -> CallToolResult:
    if name == "get_execution_environment":
        environment = await toolset.get_execution_environment()
        return CallToolResult(
            structured_content={"returnValue": environment},
            content=[TextContent(type="text", text=json.dumps(environment))],
        )
    if name != "execute_tool_script":
        raise LookupError(
            f"no tool named {name!r}: use get_execution_environment or execute_tool_script"
        )
    script = arguments.get("script")
    if not isinstance(script, str):
        raise TypeError("execute_tool_script takes {'script': '<Python code>'}")
    result = await toolset.run_script(script)
    content: list[ContentBlock] = [TextContent(type="text", text=result.json_text)]
    printed = "".join(part for part in (result.stdout, result.stderr) if part)
    if printed:
        content.append(TextContent(type="text", text=f"The script printed:\n{printed}"))
    return CallToolResult(structured_content={"returnValue": result.json_text}, content=content)


async def serve_stdio(toolset: ProgrammaticToolset) -> None:
    """Serve the toolset over stdin/stdout until the client goes away. The toolset
    (its kernel) starts inside, once stdout is the protocol's alone: what the
    kernel process writes to its standard output goes to stderr."""
    server = make_server(toolset)
    async with stdio_server() as (read, write), toolset:
        await server.run(read, write, server.create_initialization_options())


# -- other MCP servers' tools as host tools ---------------------------------------------


async def upstream_tools(
    stack: contextlib.AsyncExitStack,
    command: str,
    *,
    timeout: float | None = None,
    taken: Mapping[str, str] | Iterable[str] = (),
) -> list[Tool]:
    """Start the MCP server ``command`` (kept until ``stack`` closes) and return its
    tools as host tools, under Python names (``get-sum`` is ``get_sum``; see
    ``progtc_kernel.host.naming``). ``timeout``: seconds one of its calls may take
    (``None``: the kernel's tool-call timeout alone governs). ``taken``: names
    already offered."""
    return foreign_tools(await upstream_definitions(stack, command, timeout=timeout), taken=taken)


async def upstream_definitions(
    stack: contextlib.AsyncExitStack, command: str, *, timeout: float | None = None
) -> list[ForeignTool]:
    """Start the MCP server ``command`` and describe its tools, under their own names."""
    program, *args = shlex.split(command)
    parameters = StdioServerParameters(command=program, args=args)
    try:
        read, write = await stack.enter_async_context(stdio_client(parameters, errlog=sys.stderr))
        # No timeout of ours on the handshake: a server that exits is seen at once
        # (the pipe closes), and a slow start under load is not a failure.
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        listed = await _list_all(session)
    except (OSError, MCPError) as exc:
        why = (
            "it exited before its handshake (its own output, above, says why)"
            if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED
            else exc
        )
        raise UpstreamStartError(f"could not start the MCP server {command!r}: {why}") from None
    return [_as_foreign_tool(session, command, tool, timeout) for tool in listed]


async def _list_all(session: ClientSession) -> list[MCPTool]:
    tools: list[MCPTool] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(
            params=PaginatedRequestParams(cursor=cursor) if cursor else None
        )
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _as_foreign_tool(
    session: ClientSession, command: str, tool: MCPTool, timeout: float | None
) -> ForeignTool:
    async def call(arguments: dict[str, Any]) -> Any:
        try:
            result = await session.call_tool(tool.name, arguments, read_timeout_seconds=timeout)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise UpstreamError(
                    f"the MCP server {command!r} did not answer within {timeout or 0:g} s"
                ) from None
            if exc.code == CONNECTION_CLOSED:
                raise UpstreamError(
                    f"the MCP server {command!r} is gone (it exited or "
                    "crashed); its tools cannot be called"
                ) from None
            raise UpstreamError(f"the MCP server {command!r} refused the call: {exc}") from None
        except RuntimeError as exc:  # the SDK's check of structured content
            raise UpstreamError(str(exc)) from None
        text = "\n".join(block.text for block in result.content if isinstance(block, TextContent))
        if result.is_error:
            raise UpstreamError(text or f"{tool.name} failed")
        if result.structured_content is not None:
            return result.structured_content
        try:
            return json.loads(text)
        except ValueError:
            return text

    return ForeignTool(
        tool.name,
        tool.input_schema,
        call,
        f"the MCP server {command!r}",
        description=tool.description,
        output_schema=tool.output_schema,
    )


async def serve(tools: ToolRegistry, *, upstreams: list[str], **options: Any) -> None:
    """``progtc-kernel mcp``: the toolset over stdio, with the upstream servers' tools.
    ``options``: as for ``toolset_for``."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            # No timeout of the upstream session: the kernel's tool-call timeout governs
            # every call (it cancels the host's side when it fires).
            upstream = [
                tool for command in upstreams for tool in await upstream_definitions(stack, command)
            ]
            every = [*tools.values(), *foreign_tools(upstream, taken=list(tools))]
            await serve_stdio(toolset_for(every, **options))
    except Exception as exc:
        raise _first_cause(exc) from None


def toolset_for(
    tools: list[Tool],
    *,
    python: str | None = None,
    server: str | None = None,
    token: str | None = None,
    kernel_name: str | None = None,
    supported_modules: list[str] | None = None,
    max_tool_calls: int | None = None,
    timeout: TimeoutLike = USE_DEFAULT,
    max_result_chars: int = MAX_RESULT_CHARS,
) -> ProgrammaticToolset:
    """The ``ProgrammaticToolset`` ``progtc-kernel mcp`` serves, on its own kernel
    (unstarted). ``timeout``: the script's seconds, or a ``Timeout``; its
    ``tool_call`` is the one ceiling of a tool call, upstream or not (default:
    ``MCP_TIMEOUT``, 60 s each); its ``request``, that of requests to ``server``."""
    from ..kernels.jupyter_server import JupyterServer
    from ..kernels.resolve import described_kernel

    limits = resolve(timeout, MCP_TIMEOUT)
    kernel = ToolKernel(
        kernel=described_kernel(
            python=python,
            kernel_name=kernel_name,
            server=(
                JupyterServer(server, token=token, request_timeout=limits.request)
                if server
                else None
            ),
        ),
        timeout=limits,
    )
    return ProgrammaticToolset(
        tools,
        kernel=kernel,
        supported_modules=supported_modules,
        max_tool_calls=max_tool_calls,
        timeout=limits.run,
        max_result_chars=max_result_chars,
        returns_printed_text=True,
    )


def _first_cause(exc: BaseException) -> BaseException:
    """The error itself, out of the exception groups the SDK's task groups wrap it in."""
    while isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc
