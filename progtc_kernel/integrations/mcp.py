"""``ProgrammaticToolset`` over MCP, and other MCP servers' tools as host tools.

* ``serve_stdio(toolset)``: an MCP server on stdin/stdout with the contract's two
  tools and their input and output schemas. A script's value comes back as
  ``{"returnValue": "<JSON>"}`` (with the JSON as text too); what it printed as a
  second text block; what it displayed after that, in order: images as image
  blocks (base64, as MCP carries them), HTML, markdown and other text as text blocks
  saying their type (MCP has no block for them: an embedded resource is for data a
  client keeps, not for the model to read), then the notice of the outputs left out
  past the size limits; a contract error as a tool error whose text starts with the
  exception's type (``ValueError: ...``).
* ``upstream_tools(stack, command)``: connects to an MCP server ("code mode" for
  any of them) and offers its tools as host tools, with their input and output
  schemas in the stubs, under Python names (``get-annotated-message`` is
  ``get_annotated_message``; the stub names both, the server is called by its
  own). A server that crashes fails its own tools with a clear error; one that
  hangs fails its call at the kernel's tool-call timeout; the others keep working.
* ``ClientApprover``: the tools that need approval (``--approve TOOL``, or a tools
  module's ``REQUIRES_APPROVAL``) run only once the MCP client's user allows each
  call, asked by elicitation while the script waits in the kernel: a request of
  the server's during the tool call (protocol versions up to 2025-11-25), or an
  ``InputRequiredResult`` the client answers by calling again (2026-07-28).

Needs the ``mcp`` extra (the MCP SDK, 2.x); without it, importing this module
names the ``pip install`` that fixes it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import shlex
import sys
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._install import missing_extra

try:
    from mcp import ClientSession, StdioServerParameters, stdio_client
    from mcp.server import Server, ServerRequestContext
    from mcp.server.stdio import stdio_server
    from mcp.shared.exceptions import MCPError
    from mcp.types import (
        CONNECTION_CLOSED,
        INVALID_PARAMS,
        REQUEST_TIMEOUT,
        AudioContent,
        BlobResourceContents,
        CallToolRequestParams,
        CallToolResult,
        ContentBlock,
        ElicitRequest,
        ElicitRequestFormParams,
        ElicitResult,
        EmbeddedResource,
        ImageContent,
        InputRequiredResult,
        ListToolsResult,
        PaginatedRequestParams,
        ResourceLink,
        TextContent,
        TextResourceContents,
    )
    from mcp.types import Tool as MCPTool
    from mcp_types.version import is_version_at_least
except ImportError as exc:
    raise missing_extra("mcp", exc, "progtc-kernel's MCP server needs the MCP SDK") from exc

from .._version import __version__
from ..exceptions import UpstreamError, UpstreamStartError
from ..host.loading import with_approved_names
from ..host.naming import ForeignTool, foreign_tools, is_python_name
from ..host.tool_kernel import ToolKernel
from ..host.tools import Tool, ToolRegistry
from ..kernel_side.catalog import LIST_TOOLS_ABOVE
from ..timeouts import MCP_TIMEOUT, USE_DEFAULT, TimeoutLike, resolve
from ..toolset import ProgrammaticToolset
from ..toolset.environment import ENVIRONMENT_SCHEMA
from ..toolset.outputs import MAX_OUTPUT_BYTES, MAX_TOTAL_OUTPUT_BYTES
from ..toolset.toolset import MAX_RESULT_CHARS, ScriptResult, error_text

if TYPE_CHECKING:
    from ..approval import Approval, ApprovalRequest

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


def make_server(toolset: ProgrammaticToolset, approver: ClientApprover | None = None) -> Server:
    """The MCP server offering ``toolset``'s two tools; with ``approver`` (the
    toolset's kernel's approver), the calls that need approval are asked of the
    client that sent the script."""
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
    ) -> CallToolResult | InputRequiredResult:
        try:
            if approver is not None and params.name == "execute_tool_script":
                return await approver.run(ctx, params, toolset)
            return await _call(toolset, params.name, params.arguments or {})
        except MCPError:
            raise
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
    return _script_result(await toolset.run_script(_script_of(arguments)))


def _script_of(arguments: Mapping[str, Any]) -> str:
    script = arguments.get("script")
    if not isinstance(script, str):
        raise TypeError("execute_tool_script takes {'script': '<Python code>'}")
    return script


def _script_result(result: ScriptResult) -> CallToolResult:
    content: list[ContentBlock] = [TextContent(type="text", text=result.json_text)]
    printed = "".join(part for part in (result.stdout, result.stderr) if part)
    if printed:
        content.append(TextContent(type="text", text=f"The script printed:\n{printed}"))
    content.extend(_output_blocks(result))
    return CallToolResult(structured_content={"returnValue": result.json_text}, content=content)


def _output_blocks(result: ScriptResult) -> list[ContentBlock]:
    """What the script displayed, as content blocks the model sees: images as images,
    text forms as text saying their type; then what was left out, said."""
    blocks: list[ContentBlock] = [
        ImageContent(
            type="image", data=base64.b64encode(output.data).decode(), mime_type=output.mime_type
        )
        if output.is_image
        else TextContent(type="text", text=output.described())
        for output in result.outputs
    ]
    if result.outputs_left_out:
        blocks.append(TextContent(type="text", text=result.outputs_left_out))
    return blocks


async def serve_stdio(toolset: ProgrammaticToolset, approver: ClientApprover | None = None) -> None:
    """Serve the toolset over stdin/stdout until the client goes away. The toolset
    (its kernel) starts inside, once stdout is the protocol's alone: what the
    kernel process writes to its standard output goes to stderr. ``approver``:
    the one the toolset's kernel was given, if some calls need approval."""
    server = make_server(toolset, approver)
    async with stdio_server() as (read, write), toolset:
        await server.run(read, write, server.create_initialization_options())


# -- approval, asked of the MCP client by elicitation ------------------------------------

# The first protocol version whose servers cannot send requests of their own: a tool
# call that needs the user answers with an InputRequiredResult instead.
INPUT_REQUIRED_VERSION = "2026-07-28"
# The form the client shows: allowing is accepting it; "for this run" is a checkbox.
APPROVAL_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "allow_for_run": {
            "type": "boolean",
            "title": "Allow for the rest of this script",
            "description": "Let this tool's later calls in the same script run without asking",
            "default": False,
        }
    },
}


@dataclass
class _Question:
    """A call waiting for the user's decision."""

    request: ApprovalRequest
    answer: asyncio.Future[Approval]


@dataclass
class _Script:
    """A script running for one ``execute_tool_script`` call, and its questions."""

    run: asyncio.Task[ScriptResult]
    questions: asyncio.Queue[_Question] = field(default_factory=asyncio.Queue)
    asked: dict[str, _Question] = field(default_factory=dict)  # by input-request key


class ClientApprover:
    """The approver of ``progtc-kernel mcp``: each call that needs approval is asked
    of the MCP client whose ``execute_tool_script`` made it, by elicitation, while
    the script waits in the kernel. Accepting the form allows the call (or, with its
    box ticked, the tool for the rest of the script); declining or cancelling denies
    it. A client that cannot elicit gets the denial, saying what to do, as the
    script's error (never a hang).

    Scripts run one at a time (the kernel runs one anyway), so that each question
    goes to the client whose script asks it.

    Args:
        fix: What to do instead of approving, for a client without elicitation.
    """

    def __init__(self, fix: str = "start progtc-kernel mcp without --approve") -> None:
        self.fix = fix
        self._one_script = asyncio.Lock()
        self._current: _Script | None = None
        self._held: dict[str, _Script] = {}  # requestState -> a script waiting for answers

    def __call__(self, request: ApprovalRequest) -> Awaitable[Approval]:
        """The question for the client, queued at once: the calls of a batch (a
        ``gather``'s) are all queued before the first is asked, and asked together."""
        from ..approval import Approval

        answer: asyncio.Future[Approval] = asyncio.get_running_loop().create_future()
        script = self._current
        if script is None or script.run.done():
            answer.set_result(
                Approval.deny(f"no MCP client waits on the script that called {request.tool}")
            )
        else:
            script.questions.put_nowait(_Question(request, answer))
        return answer  # cancelled with the call (an interrupt, the run's timeout)

    async def run(
        self, ctx: ServerRequestContext, params: CallToolRequestParams, toolset: ProgrammaticToolset
    ) -> CallToolResult | InputRequiredResult:
        """Run the script of an ``execute_tool_script`` call (or carry on with the one a
        retry's ``requestState`` names), asking the client as its calls need."""
        if params.request_state is not None:
            script = self._held.pop(params.request_state, None)
            if script is None:
                raise MCPError(
                    INVALID_PARAMS,
                    "this requestState names no script waiting for answers (it was "
                    "answered already, or the server restarted): call execute_tool_script again",
                )
            self._answer(script, params.input_responses or {})
        else:
            code = _script_of(params.arguments or {})
            await self._one_script.acquire()
            script = self._current = _Script(asyncio.ensure_future(toolset.run_script(code)))
            script.run.add_done_callback(lambda _: self._one_script.release())
        return await self._drive(ctx, script)

    async def _drive(
        self, ctx: ServerRequestContext, script: _Script
    ) -> CallToolResult | InputRequiredResult:
        """Wait for the script's end, asking the client the questions it raises."""
        modern = is_version_at_least(ctx.protocol_version, INPUT_REQUIRED_VERSION)
        try:
            while True:
                asking = asyncio.ensure_future(script.questions.get())
                await asyncio.wait({script.run, asking}, return_when=asyncio.FIRST_COMPLETED)
                if not asking.done():
                    asking.cancel()
                    return _script_result(script.run.result())
                questions = _together(asking.result(), script.questions)
                if not _can_elicit(ctx):
                    for question in questions:
                        _decide(question, self._no_elicitation(question.request))
                elif modern:  # the client asks its user, then calls again with the answers
                    return self._hold(script, questions)
                else:
                    for question in questions:  # one form at a time
                        await _elicit(ctx, question)
        except asyncio.CancelledError:  # the client cancelled its call, or left
            script.run.cancel()  # the script ends with it (its questions are withdrawn)
            raise

    def _hold(self, script: _Script, questions: list[_Question]) -> InputRequiredResult:
        token = secrets.token_urlsafe(24)
        self._held[token] = script
        script.asked = {f"approve-{q.request.call_id}": q for q in questions}
        return InputRequiredResult(
            input_requests={
                key: ElicitRequest(params=_form(q.request)) for key, q in script.asked.items()
            },
            request_state=token,
        )

    def _answer(self, script: _Script, responses: Mapping[str, Any]) -> None:
        from ..approval import Approval

        for key, question in script.asked.items():
            response = responses.get(key)
            _decide(
                question,
                _approval(question.request, response)
                if isinstance(response, ElicitResult)
                else Approval.deny(f"the MCP client gave no answer about {question.request.tool}"),
            )
        script.asked = {}

    def _no_elicitation(self, request: ApprovalRequest) -> Approval:
        from ..approval import Approval

        return Approval.deny(
            f"{request.tool} needs the user's approval, and this MCP client cannot ask for "
            f"it (it did not declare the elicitation capability): use a client with "
            f"elicitation, or {self.fix}"
        )


def _together(first: _Question, queue: asyncio.Queue[_Question]) -> list[_Question]:
    """The question that came, and those of the calls that arrived with it (a
    ``gather``'s: the gate asks about a batch at once)."""
    questions = [first]
    while not queue.empty():
        questions.append(queue.get_nowait())
    return [question for question in questions if not question.answer.done()]


def _can_elicit(ctx: ServerRequestContext) -> bool:
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    # A bare `elicitation: {}` (before modes existed) means forms.
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _form(request: ApprovalRequest) -> ElicitRequestFormParams:
    arguments = json.dumps(request.arguments, indent=2, ensure_ascii=False, default=repr)
    return ElicitRequestFormParams(
        message=f"The script wants to call {request.tool} with these arguments:\n"
        f"{arguments}\nAllow it?",
        requested_schema=APPROVAL_FORM,
    )


async def _elicit(ctx: ServerRequestContext, question: _Question) -> None:
    """Ask the client during its tool call (protocol versions before 2026-07-28)."""
    from ..approval import Approval

    asking = asyncio.ensure_future(
        ctx.session.elicit_form(
            _form(question.request).message, APPROVAL_FORM, related_request_id=ctx.request_id
        )
    )
    try:
        either: set[asyncio.Future[Any]] = {asking, question.answer}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not asking.done():  # the call no longer waits (an interrupt, a timeout)
            asking.cancel()
    if question.answer.done():
        return
    try:
        result = asking.result()
    except Exception as exc:  # an error answer, a malformed one: the call is denied
        _decide(
            question,
            Approval.deny(f"the MCP client could not ask about {question.request.tool}: {exc}"),
        )
        return
    _decide(question, _approval(question.request, result))


def _approval(request: ApprovalRequest, result: ElicitResult) -> Approval:
    from ..approval import Approval

    if result.action == "accept":
        for_run = bool((result.content or {}).get("allow_for_run"))
        return Approval.allow_for_run() if for_run else Approval.allow()
    if result.action == "decline":
        return Approval.deny(f"the user declined the call of {request.tool}")
    return Approval.deny(f"the user dismissed the approval of {request.tool} without allowing it")


def _decide(question: _Question, approval: Approval) -> None:
    if not question.answer.done():
        question.answer.set_result(approval)


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
        return value_of(result, tool.name)

    return ForeignTool(
        tool.name,
        tool.input_schema,
        call,
        f"the MCP server {command!r}",
        description=tool.description,
        output_schema=tool.output_schema,
    )


def value_of(result: CallToolResult, tool: str = "the tool") -> Any:
    """What an upstream's tool result is to a script.

    ``structuredContent`` is the value (data, as its output schema says); otherwise
    the content: one block is its value, several are a list of their values, in
    order, none is ``None``. A text block is a ``str`` (JSON sent as text stays text:
    ``json.loads`` it); an image or audio block is ``{"type": "image", "mime_type":
    "image/png", "data": "<base64>"}``; an embedded resource is ``{"type":
    "resource", "uri": ..., "mime_type": ..., "text": ...}`` (``"blob"``, base64, for
    binary ones); a resource link is ``{"type": "resource_link", "uri": ...,
    "name": ...}``. ``isError`` raises ``UpstreamError`` with the server's text: a
    ``ToolError`` in the script."""
    if result.is_error:
        text = "\n".join(b.text for b in result.content if isinstance(b, TextContent))
        raise UpstreamError(text or f"{tool} failed (the MCP server said no more)")
    if result.structured_content is not None:
        return result.structured_content
    values = [_block_value(block) for block in result.content]
    return values[0] if len(values) == 1 else values or None


def _block_value(block: ContentBlock) -> Any:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, (ImageContent, AudioContent)):
        return {"type": block.type, "mime_type": block.mime_type, "data": block.data}
    if isinstance(block, EmbeddedResource):
        contents = block.resource
        kept = {"type": "resource", "uri": str(contents.uri), "mime_type": contents.mime_type}
        if isinstance(contents, TextResourceContents):
            return {**kept, "text": contents.text}
        if isinstance(contents, BlobResourceContents):
            return {**kept, "blob": contents.blob}
        return kept
    if isinstance(block, ResourceLink):
        link = block.model_dump(mode="json", exclude_none=True, exclude={"meta", "annotations"})
        return {key: link[key] for key in sorted(link, key=lambda k: k != "type")}
    return block.model_dump(mode="json", exclude_none=True)


def upstream_of(text: str) -> tuple[str | None, str]:
    """``github=npx ...`` -> ``("github", "npx ...")``: a name (a Python name before the
    first ``=``) puts the server's tools in the namespace ``tools.github``; a
    command alone keeps them flat."""
    name, equals, command = text.partition("=")
    if equals and is_python_name(name.strip()) and command.strip():
        return name.strip(), command.strip()
    return None, text


async def upstream_host_tools(
    stack: contextlib.AsyncExitStack, upstreams: Iterable[str], taken: Iterable[str]
) -> list[Tool]:
    """The tools of every upstream (``NAME=COMMAND`` or ``COMMAND``), started in order:
    the unnamed ones' flat beside ``taken``, each named one's as ``name.tool``."""
    flat: list[ForeignTool] = []
    spaced: dict[str, list[ForeignTool]] = {}
    for text in upstreams:
        name, command = upstream_of(text)
        listed = await upstream_definitions(stack, command)
        if name is None:
            flat.extend(listed)
        else:
            spaced.setdefault(name, []).extend(listed)
    tools = foreign_tools(flat, taken=list(taken))
    for name, listed in spaced.items():
        tools.extend(namespaced(name, foreign_tools(listed)))
    return tools


def namespaced(namespace: str, tools: Iterable[Tool]) -> list[Tool]:
    """``tools`` renamed ``namespace.tool``: ``from tools.<namespace> import tool``."""
    return [tool.renamed(f"{namespace}.{tool.name}") for tool in tools]


async def serve(
    tools: ToolRegistry,
    *,
    upstreams: list[str],
    approve: Collection[str] = (),
    requires_approval: Callable[[str, dict[str, Any]], bool] | None = None,
    **options: Any,
) -> None:
    """``progtc-kernel mcp``: the toolset over stdio, with the upstream servers' tools.
    ``approve``: tool names (host or upstream) whose calls the client's user must
    allow; ``requires_approval``: the tools module's policy, too. ``options``: as for
    ``toolset_for``."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            # No timeout of the upstream session: the kernel's tool-call timeout governs
            # every call (it cancels the host's side when it fires).
            every = [*tools.values(), *await upstream_host_tools(stack, upstreams, list(tools))]
            policy = with_approved_names(approve, requires_approval, [tool.name for tool in every])
            approver = ClientApprover() if policy is not None else None
            toolset = toolset_for(every, approve=approver, requires_approval=policy, **options)
            if requires_approval is not None:  # the names stay known beside the predicate
                toolset.approval_note = (sorted(approve), True)
            await serve_stdio(toolset, approver)
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
    max_output_bytes: int = MAX_OUTPUT_BYTES,
    max_total_output_bytes: int = MAX_TOTAL_OUTPUT_BYTES,
    approve: ClientApprover | None = None,
    requires_approval: Collection[str] | Callable[[str, dict[str, Any]], bool] | None = None,
    check_types: bool | None = None,
    list_tools_above: int | None = LIST_TOOLS_ABOVE,
) -> ProgrammaticToolset:
    """The ``ProgrammaticToolset`` ``progtc-kernel mcp`` serves, on its own kernel
    (unstarted). ``timeout``: the script's seconds, or a ``Timeout``; its
    ``tool_call`` is the one ceiling of a tool call, upstream or not (default:
    ``MCP_TIMEOUT``, 60 s each); its ``request``, that of requests to ``server``.
    ``max_output_bytes``, ``max_total_output_bytes``: the limits of what a script's
    displays return, each and in all (see ``ProgrammaticToolset``).
    ``approve`` and ``requires_approval``: who decides which calls may run, and
    which calls need it. ``check_types``, ``list_tools_above``: as for
    ``ProgrammaticToolset``."""
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
        approve=approve,
        requires_approval=requires_approval,
    )
    return ProgrammaticToolset(
        tools,
        kernel=kernel,
        supported_modules=supported_modules,
        max_tool_calls=max_tool_calls,
        timeout=limits.run,
        max_result_chars=max_result_chars,
        max_output_bytes=max_output_bytes,
        max_total_output_bytes=max_total_output_bytes,
        returns_printed_text=True,
        check_types=check_types,
        list_tools_above=list_tools_above,
    )


def _first_cause(exc: BaseException) -> BaseException:
    """The error itself, out of the exception groups the SDK's task groups wrap it in."""
    while isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc
