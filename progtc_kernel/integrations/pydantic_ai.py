"""A pydantic-ai toolset: the agent writes one script instead of many tool calls.

::

    from pydantic_ai import Agent, FunctionToolset
    from progtc_kernel.integrations.pydantic_ai import CodeModeToolset

    weather = FunctionToolset([get_weather, search_database])
    agent = Agent(model, toolsets=[CodeModeToolset(toolsets=[weather])])

The agent sees two tools, ``get_execution_environment`` and ``execute_tool_script``
(``ProgrammaticToolset``); the tools of the toolsets given (function tools, an MCP
server's tools...) are not offered to the model directly but served to its scripts,
with their schemas in the stubs, under Python names (``get-sum`` is ``get_sum``).
Runs at once keep apart: each script gets its own run's tools and context; they
share the kernel, taking turns (see ``CodeModeToolset``). Needs the ``pydantic-ai``
extra; without it, importing this module names the ``pip install`` that fixes it.
"""

from __future__ import annotations

import asyncio
import copy
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from .._install import missing_extra

try:
    from pydantic_ai import ApprovalRequired, CallDeferred, RunContext, ToolFailed, ToolReturn
    from pydantic_ai.tools import ToolDefinition
    from pydantic_ai.toolsets import AbstractToolset, ToolsetTool
except ImportError as exc:
    raise missing_extra(
        "pydantic-ai", exc, "CodeModeToolset needs pydantic-ai (Python 3.11+)"
    ) from exc
from pydantic_core import SchemaValidator, core_schema

from ..host.naming import ForeignTool, foreign_tools
from ..host.tool_kernel import ToolKernel
from ..host.tools import ToolRegistry, ToolsLike
from ..kernels.base import KernelLike
from ..toolset import ProgrammaticToolset
from ..toolset.toolset import error_text

_ENVIRONMENT_DESCRIPTION = (
    "Get details about the execution environment: how to write a script for "
    "execute_tool_script, which modules it may import, and a typed Python stub for "
    "every tool it can call. Call this once before writing a script."
)
_EXECUTE_DESCRIPTION = (
    "Execute a Python script against the tools described by get_execution_environment: "
    "it must define run() returning a dict; you get that dict back as JSON. Use it to "
    "batch many tool calls in one step and return only what you need."
)
_NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}
_SCRIPT_ARGUMENTS = {
    "type": "object",
    "properties": {
        "script": {
            "type": "string",
            "description": "Python code that defines run() returning a dict",
        }
    },
    "required": ["script"],
    "additionalProperties": False,
}
_ANY_ARGUMENTS = SchemaValidator(
    core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())
)


class CodeModeToolset(AbstractToolset[Any]):
    """``get_execution_environment`` and ``execute_tool_script`` for a pydantic-ai ``Agent``.

    The model gets the two tools; the tools of ``toolsets`` are served to its scripts,
    with their schemas in the stubs. Tools whose names are not Python names
    (``get-sum``) get one (``get_sum``; see ``progtc_kernel.host.naming``).

    Runs at once (one agent run twice, or several agents given this toolset) keep apart:
    each run gets a toolset of its own (``for_run``), and a script is served the tools
    of its own run, called with its run's context (its ``deps``). The kernel is the one
    thing they share: scripts of different runs take turns on it (a script's timeout
    counts from its start), and with ``fresh_namespace=False`` they share the names
    scripts leave. A kernel this toolset starts starts with the first run and closes
    after the last one still going; inside ``async with agent:`` every run uses one
    kernel. For runs that must not share a kernel, give each run its own toolset:
    ``agent.run(prompt, toolsets=[CodeModeToolset(...)])``. If a toolset fails to
    enter, those entered before it are exited, the kernel is not started, and the
    error says which one failed.

    Example:
        ```python
        agent = Agent("openai:gpt-5", toolsets=[CodeModeToolset(toolsets=[FunctionToolset([f])])])
        ```

    Args:
        tools: Host callables (or ``Tool`` objects) scripts may call.
        toolsets: pydantic-ai toolsets whose tools scripts may call too; they are
            entered with this toolset and called with the agent's run context.
        kernel: The kernel scripts run on, as ``ToolKernel`` takes it, or a
            ``ToolKernel`` (a started one is left as it is: start it yourself to share
            it between toolsets); default: a local kernel of its own.
        id: This toolset's id.
        **options: As for ``ProgrammaticToolset``: ``supported_modules``,
            ``max_tool_calls``, ``timeout``, ``fresh_namespace``, ``max_output_chars``,
            ``max_result_chars``.
    """

    def __init__(
        self,
        tools: ToolsLike = None,
        *,
        toolsets: Sequence[AbstractToolset[Any]] = (),
        kernel: ToolKernel | KernelLike | None = None,
        id: str | None = "progtc-kernel",
        **options: Any,
    ) -> None:
        self.own_tools = ToolRegistry.of(tools)
        self.toolsets = list(toolsets)
        options.setdefault("returns_printed_text", True)  # call_tool returns it
        self.programmatic = ProgrammaticToolset(self.own_tools, kernel=kernel, **options)
        self._id = id
        self._kernel_users = _KernelUsers(self.programmatic)
        self._entered = _Entered(self)

    @property
    def id(self) -> str | None:
        return self._id

    async def for_run(self, ctx: RunContext[Any]) -> AbstractToolset[Any]:
        """A toolset for one run: the run's own copies of the toolsets (an
        ``MCPToolset`` with per-run headers gives one), this toolset's kernel."""
        toolsets = await asyncio.gather(*(toolset.for_run(ctx) for toolset in self.toolsets))
        return _CodeModeRun(self, list(toolsets))

    async def __aenter__(self) -> CodeModeToolset:
        await self._entered.enter(self.toolsets)
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        await self._entered.exit()
        return None

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        """Our two tools; the toolsets' tools are listed when a script is run."""
        return self._list(self, ctx)

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        return await self._call(self.toolsets, name, tool_args, ctx)

    def _list(
        self, listed_by: AbstractToolset[Any], ctx: RunContext[Any]
    ) -> dict[str, ToolsetTool[Any]]:
        definitions = [
            ToolDefinition(
                name="get_execution_environment",
                parameters_json_schema=_NO_ARGUMENTS,
                description=_ENVIRONMENT_DESCRIPTION,
            ),
            ToolDefinition(
                name="execute_tool_script",
                parameters_json_schema=_SCRIPT_ARGUMENTS,
                description=_EXECUTE_DESCRIPTION,
                return_schema={"type": "string"},
            ),
        ]
        return {
            definition.name: ToolsetTool(
                toolset=listed_by,
                tool_def=definition,
                max_retries=ctx.max_retries,
                args_validator=_ANY_ARGUMENTS,
            )
            for definition in definitions
        }

    async def _call(
        self,
        toolsets: Sequence[AbstractToolset[Any]],
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[Any],
    ) -> Any:
        """One of our two tools, for the run ``ctx`` belongs to: its toolsets' tools are
        listed and served to this call's script alone, called with ``ctx``."""
        serving = await self._serving(toolsets, ctx)
        if name == "get_execution_environment":
            return await serving.get_execution_environment()
        try:
            result = await serving.run_script(str(tool_args.get("script", "")))
        except Exception as exc:  # the contract's errors: the model reads them and retries
            raise ToolFailed(error_text(exc)) from None
        printed = "".join(part for part in (result.stdout, result.stderr) if part)
        return ToolReturn(
            return_value=result.json_text,
            content=f"The script printed:\n{printed}" if printed else None,
            metadata={"stdout": result.stdout, "stderr": result.stderr},
        )

    async def _serving(
        self, toolsets: Sequence[AbstractToolset[Any]], ctx: RunContext[Any]
    ) -> ProgrammaticToolset:
        """``self.programmatic`` serving our tools and the toolsets' tools for ``ctx``:
        a copy of it (same kernel, options and kept namespace), so that runs at once
        never swap each other's tools (the kernel takes the tools per execution)."""
        listed = await asyncio.gather(*(toolset.get_tools(ctx) for toolset in toolsets))
        forwarded = [
            _forward(toolset, tool, ctx)
            for toolset, tools in zip(toolsets, listed, strict=True)
            for tool in tools.values()
        ]
        serving = copy.copy(self.programmatic)
        serving.tools = ToolRegistry(
            [*self.own_tools.values(), *foreign_tools(forwarded, taken=list(self.own_tools))]
        )
        return serving


class _CodeModeRun(AbstractToolset[Any]):
    """A ``CodeModeToolset`` for one agent run: the run's toolsets, entered for the
    run; the kernel and everything else of the toolset it comes from."""

    def __init__(self, shared: CodeModeToolset, toolsets: list[AbstractToolset[Any]]) -> None:
        self.shared = shared
        self.toolsets = toolsets
        self._entered = _Entered(shared)

    @property
    def id(self) -> str | None:
        return self.shared.id

    @property
    def label(self) -> str:
        return self.shared.label

    async def __aenter__(self) -> _CodeModeRun:
        await self._entered.enter(self.toolsets)
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        await self._entered.exit()
        return None

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        return self.shared._list(self, ctx)

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        return await self.shared._call(self.toolsets, name, tool_args, ctx)


class _KernelUsers:
    """The kernel of a ``CodeModeToolset``, started by the first of its users (the
    toolset entered, its runs) and closed by the last."""

    def __init__(self, programmatic: ProgrammaticToolset) -> None:
        self.programmatic = programmatic
        self._users = 0
        self._lock = asyncio.Lock()  # two runs starting at once start it once

    async def __aenter__(self) -> None:
        async with self._lock:
            if self._users == 0:
                await self.programmatic.start()
            self._users += 1

    async def __aexit__(self, *exc: Any) -> None:
        async with self._lock:
            self._users -= 1
            if self._users == 0:
                await self.programmatic.close()


class _Entered:
    """Toolsets and the kernel of ``owner``, entered together by the first ``async
    with`` and exited together by the last, as pydantic-ai's ``CombinedToolset`` does:
    one failing to enter exits those entered before it."""

    def __init__(self, owner: CodeModeToolset) -> None:
        self.owner = owner
        self._count = 0
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    async def enter(self, toolsets: Sequence[AbstractToolset[Any]]) -> None:
        async with self._lock:
            if self._count == 0:
                async with AsyncExitStack() as stack:
                    for toolset in toolsets:
                        await self._enter(stack, toolset)
                    await stack.enter_async_context(self.owner._kernel_users)
                    self._stack = stack.pop_all()
            self._count += 1

    async def _enter(self, stack: AsyncExitStack, toolset: AbstractToolset[Any]) -> None:
        try:
            await stack.enter_async_context(toolset)
        except BaseException as exc:
            # A note, not another exception: callers still catch what the toolset raised.
            if sys.version_info >= (3, 11):  # always (pydantic-ai needs it); for mypy
                exc.add_note(
                    f"{self.owner.label} could not enter the toolset "
                    f"{toolset.label}; the toolsets entered before it are exited "
                    "and the kernel is not started"
                )
            raise

    async def exit(self) -> None:
        async with self._lock:
            self._count -= 1
            if self._count == 0 and self._stack is not None:
                stack, self._stack = self._stack, None
                await stack.aclose()


def _forward(
    toolset: AbstractToolset[Any], tool: ToolsetTool[Any], ctx: RunContext[Any]
) -> ForeignTool:
    """A tool ``toolset`` listed for the run of ``ctx``, called through ``toolset`` (as
    pydantic-ai's ``CombinedToolset`` does: a prefixed or filtered toolset knows its
    tools by names their own toolset does not) by its listed name (scripts may know it
    by another: see ``progtc_kernel.host.naming``), with ``ctx``."""
    definition = tool.tool_def

    async def call(arguments: dict[str, Any]) -> Any:
        validated = tool.args_validator.validate_python(arguments)
        try:
            value = await toolset.call_tool(definition.name, validated, ctx, tool)
        except (ApprovalRequired, CallDeferred) as exc:
            wants = "approval" if isinstance(exc, ApprovalRequired) else "to be deferred"
            raise PermissionError(
                f"{definition.name} asks for {wants}, which a call from a script cannot "
                "wait for: give that tool to the agent beside CodeModeToolset, not in its "
                "toolsets"
            ) from None
        return value.return_value if isinstance(value, ToolReturn) else value

    source = f"the toolset {tool.toolset.label}"
    return ForeignTool(
        definition.name,
        definition.parameters_json_schema,
        call,
        source,
        description=definition.description,
        output_schema=_as_returned(definition.return_schema),
    )


def _as_returned(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema of what a forwarded tool's call returns. pydantic-ai hands back an MCP
    tool's ``{"result": value}`` (how the MCP SDK wraps a plain value) as ``value``."""
    properties = (schema or {}).get("properties")
    if isinstance(properties, dict) and list(properties) == ["result"]:
        inner = properties["result"]
        return inner if isinstance(inner, dict) else None
    return schema
