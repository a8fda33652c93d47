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
Needs the ``pydantic-ai`` extra; without it, importing this module names the
``pip install`` that fixes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._install import missing_extra

try:
    from pydantic_ai import RunContext, ToolFailed, ToolReturn
    from pydantic_ai.tools import ToolDefinition
    from pydantic_ai.toolsets import AbstractToolset, ToolsetTool
except ImportError as exc:
    raise missing_extra("pydantic-ai", exc, "CodeModeToolset needs pydantic-ai (Python 3.11+)"
                        ) from exc
from pydantic_core import SchemaValidator, core_schema

from ..host.naming import ForeignTool, foreign_tools
from ..host.tool_kernel import ToolKernel
from ..host.tools import ToolRegistry, ToolsLike
from ..toolset import ProgrammaticToolset
from ..toolset.toolset import error_text

_ENVIRONMENT_DESCRIPTION = (
    "Get details about the execution environment: how to write a script for "
    "execute_tool_script, which modules it may import, and a typed Python stub for "
    "every tool it can call. Call this once before writing a script.")
_EXECUTE_DESCRIPTION = (
    "Execute a Python script against the tools described by get_execution_environment: "
    "it must define run() returning a dict; you get that dict back as JSON. Use it to "
    "batch many tool calls in one step and return only what you need.")
_NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}
_SCRIPT_ARGUMENTS = {"type": "object", "properties": {"script": {
    "type": "string", "description": "Python code that defines run() returning a dict"}},
    "required": ["script"], "additionalProperties": False}
_ANY_ARGUMENTS = SchemaValidator(core_schema.dict_schema(
    core_schema.str_schema(), core_schema.any_schema()))


class CodeModeToolset(AbstractToolset[Any]):
    """``get_execution_environment`` and ``execute_tool_script`` for an ``Agent``.

    ``tools``: host callables (or ``Tool`` objects) scripts may call. ``toolsets``:
    pydantic-ai toolsets whose tools scripts may call too; they are entered with
    this toolset and called with the agent's run context. ``kernel``: the
    ``ToolKernel`` scripts run on (default: a local kernel of its own). ``id``: this
    toolset's id. ``options``: as for ``ProgrammaticToolset`` (``supported_modules``,
    ``max_tool_calls``, ``timeout``, ``fresh_namespace``, ``max_output_chars``,
    ``max_result_chars``). Tools of ``toolsets`` whose names are not Python names
    (``get-sum``) get one (``get_sum``; see ``progtc_kernel.host.naming``).
    """

    def __init__(self, tools: ToolsLike = None, *, toolsets: Sequence[AbstractToolset[Any]] = (),
                 kernel: ToolKernel | None = None, id: str | None = "progtc-kernel",
                 **options: Any) -> None:
        self.own_tools = ToolRegistry.of(tools)
        self.toolsets = list(toolsets)
        options.setdefault("returns_printed_text", True)  # call_tool returns it
        self.programmatic = ProgrammaticToolset(self.own_tools, kernel=kernel, **options)
        self._id = id
        self._ctx: RunContext[Any] | None = None
        self._entered = 0

    @property
    def id(self) -> str | None:
        return self._id

    async def __aenter__(self) -> CodeModeToolset:
        if self._entered == 0:
            for toolset in self.toolsets:
                await toolset.__aenter__()
            await self.programmatic.__aenter__()
        self._entered += 1
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self._entered -= 1
        if self._entered == 0:
            await self.programmatic.__aexit__(*exc)
            for toolset in reversed(self.toolsets):
                await toolset.__aexit__(*exc)
        return None

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        """Our two tools; the forwarded toolsets' tools become the scripts' tools."""
        self._ctx = ctx
        forwarded = [tool for toolset in self.toolsets
                     for tool in (await toolset.get_tools(ctx)).values()]
        self.programmatic.tools = ToolRegistry([*self.own_tools.values(), *foreign_tools(
            (self._forward(tool) for tool in forwarded), taken=list(self.own_tools))])
        definitions = [
            ToolDefinition(name="get_execution_environment", parameters_json_schema=_NO_ARGUMENTS,
                           description=_ENVIRONMENT_DESCRIPTION),
            ToolDefinition(name="execute_tool_script", parameters_json_schema=_SCRIPT_ARGUMENTS,
                           description=_EXECUTE_DESCRIPTION, return_schema={"type": "string"}),
        ]
        return {definition.name: ToolsetTool(toolset=self, tool_def=definition,
                                             max_retries=ctx.max_retries,
                                             args_validator=_ANY_ARGUMENTS)
                for definition in definitions}

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any],
                        tool: ToolsetTool[Any]) -> Any:
        self._ctx = ctx
        if name == "get_execution_environment":
            return await self.programmatic.get_execution_environment()
        try:
            result = await self.programmatic.run_script(str(tool_args.get("script", "")))
        except Exception as exc:  # the contract's errors: the model reads them and retries
            raise ToolFailed(error_text(exc)) from None
        printed = "".join(part for part in (result.stdout, result.stderr) if part)
        return ToolReturn(return_value=result.json_text,
                          content=f"The script printed:\n{printed}" if printed else None,
                          metadata={"stdout": result.stdout, "stderr": result.stderr})

    def _forward(self, tool: ToolsetTool[Any]) -> ForeignTool:
        """A forwarded toolset's tool, called by its own name (scripts may know it
        by another: see ``progtc_kernel.host.naming``)."""
        definition = tool.tool_def

        async def call(arguments: dict[str, Any]) -> Any:
            assert self._ctx is not None, "tools are listed before they are called"
            validated = tool.args_validator.validate_python(arguments)
            value = await tool.toolset.call_tool(definition.name, validated, self._ctx, tool)
            return value.return_value if isinstance(value, ToolReturn) else value

        source = f"the toolset {tool.toolset.label}"
        return ForeignTool(definition.name, definition.parameters_json_schema, call, source,
                           description=definition.description,
                           output_schema=_as_returned(definition.return_schema))


def _as_returned(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema of what a forwarded tool's call returns. pydantic-ai hands back an MCP
    tool's ``{"result": value}`` (how the MCP SDK wraps a plain value) as ``value``."""
    properties = (schema or {}).get("properties")
    if isinstance(properties, dict) and list(properties) == ["result"]:
        inner = properties["result"]
        return inner if isinstance(inner, dict) else None
    return schema

