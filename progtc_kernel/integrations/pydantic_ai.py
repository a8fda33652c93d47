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
share the kernel, taking turns (see ``CodeModeToolset``). What a script displays (a
chart, a table's HTML) comes back in the tool's result after the JSON: images as
``BinaryContent``, so a vision model sees them. Needs the ``pydantic-ai``
extra; without it, importing this module names the ``pip install`` that fixes it.

Tools that pydantic-ai says need approval (``requires_approval=True``, raising
``ApprovalRequired``, an ``ApprovalRequiredToolset``) need it inside scripts too, in
both of pydantic-ai's ways. The script's call waits, live in the kernel, while the
run's ``HandleDeferredToolCalls`` handlers are asked (inline); if none decides, the
agent run ends with ``DeferredToolRequests`` for the ``execute_tool_script`` call
(the calls it waits on in its metadata: ``script_calls`` shows them as requests of
their own), and the run resumed with ``DeferredToolResults`` (``script_results``)
lets the same script carry on from where it stopped.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from .._install import missing_extra

try:
    from pydantic_ai import (
        ApprovalRequired,
        CallDeferred,
        DeferredToolRequests,
        DeferredToolResults,
        RunContext,
        ToolApproved,
        ToolDenied,
        ToolFailed,
        ToolReturn,
    )
    from pydantic_ai.messages import BinaryContent, ModelRequest, ToolCallPart, ToolReturnPart
    from pydantic_ai.tools import DeferredToolApprovalResult, ToolDefinition
    from pydantic_ai.toolsets import (
        AbstractToolset,
        ApprovalRequiredToolset,
        CombinedToolset,
        ToolsetTool,
        WrapperToolset,
    )
except ImportError as exc:
    raise missing_extra(
        "pydantic-ai", exc, "CodeModeToolset needs pydantic-ai (Python 3.11+)"
    ) from exc
from pydantic import TypeAdapter
from pydantic_core import SchemaValidator, core_schema

from ..host.naming import ForeignTool, foreign_tools
from ..host.threads import ToolThreads
from ..host.tool_kernel import ToolKernel
from ..host.tools import Outcome, QueueHook, Tool, ToolRegistry, ToolsLike, check_name, failure
from ..kernels.base import KernelLike
from ..toolset import ProgrammaticToolset, ScriptResult
from ..toolset.toolset import error_text

__all__ = ["CodeModeToolset", "script_calls", "script_results"]

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

# The key of ``DeferredToolRequests.metadata[<execute_tool_script call id>]`` that lists
# the calls the script waits on, and of ``DeferredToolResults.metadata[...]`` that
# carries the decisions about them (``script_calls``, ``script_results``).
SCRIPT_CALLS = "script_calls"
SCRIPT_DECISIONS = "script_decisions"
# Scripts that ended while no run followed them (a timeout while waiting for a
# decision), kept to answer the run that resumes them: the last ones, by call id.
ENDED_SCRIPTS_KEPT = 100

Decision: TypeAlias = ToolApproved | ToolDenied
# Which calls need approval besides those pydantic-ai marks: as ``ToolKernel`` takes it.
RequiresApproval: TypeAlias = bool | Collection[str] | Callable[[str, dict[str, Any]], bool] | None
_DECISION = TypeAdapter[Decision](DeferredToolApprovalResult)


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
    after the last one still going (or the last script still waiting for a decision);
    inside ``async with agent:`` every run uses one kernel. For runs that must not
    share a kernel, give each run its own toolset:
    ``agent.run(prompt, toolsets=[CodeModeToolset(...)])``. If a toolset fails to
    enter, those entered before it are exited, the kernel is not started, and the
    error says which one failed.

    A call that needs approval (a tool with ``requires_approval=True``, one that raises
    ``ApprovalRequired``, the tools of an ``ApprovalRequiredToolset``, or named by
    ``requires_approval``) waits in the script while the run's
    ``HandleDeferredToolCalls`` handlers are asked about it (the calls of a ``gather``
    together, by the tool's own name, arguments and a call id of their own). A denial
    raises ``ToolDeniedError`` in the script. If no handler decides, the agent run ends
    with ``DeferredToolRequests`` (give the agent that output type) for the
    ``execute_tool_script`` call while the script waits, live: resume the run with
    ``DeferredToolResults`` (``script_calls`` and ``script_results`` map a script's
    calls to it) and the same script carries on; the model gets its result. A script
    that waits longer than its ``timeout`` (or the ``Timeout``'s ``approval``) is
    stopped; a run resumed after that tells the model so.

    Example:
        ```python
        agent = Agent("openai:gpt-5", toolsets=[CodeModeToolset(toolsets=[FunctionToolset([f])])])
        ```

    Args:
        tools: Host callables (or ``Tool`` objects) scripts may call.
        toolsets: pydantic-ai toolsets whose tools scripts may call too; they are
            entered with this toolset and called with the agent's run context. A
            mapping of name to toolset puts each one's tools in a namespace
            (``{"github": MCPToolset(...)}``: ``from tools.github import
            search_issues``), so that two toolsets may offer the same tool name.
        kernel: The kernel scripts run on, as ``ToolKernel`` takes it, or a
            ``ToolKernel`` (a started one is left as it is: start it yourself to share
            it between toolsets); default: a local kernel of its own.
        id: This toolset's id.
        requires_approval: Which calls need approval besides those pydantic-ai marks:
            ``True`` every call, a collection of tool names, or a function
            ``(tool name, arguments) -> bool``. Decided the pydantic-ai way, as above.
        **options: As for ``ProgrammaticToolset``: ``supported_modules``,
            ``max_tool_calls``, ``timeout``, ``fresh_namespace``, ``max_output_chars``,
            ``max_result_chars``, ``max_output_bytes``, ``max_total_output_bytes``,
            ``list_tools_above``, ``check_types`` (scripts type-checked against the tools'
            stubs before they run; default: on when ``ty`` is installed).

    Raises:
        TypeError: ``approve=`` was given: here pydantic-ai's handlers or the
            application decide.
    """

    def __init__(
        self,
        tools: ToolsLike = None,
        *,
        toolsets: Sequence[AbstractToolset[Any]] | Mapping[str, AbstractToolset[Any]] = (),
        kernel: ToolKernel | KernelLike | None = None,
        id: str | None = "progtc-kernel",
        requires_approval: RequiresApproval = None,
        **options: Any,
    ) -> None:
        if "approve" in options:
            raise TypeError(
                "CodeModeToolset takes no approve=: calls that need approval are decided "
                "the pydantic-ai way, by a HandleDeferredToolCalls capability or by the "
                "application resuming the run with DeferredToolResults"
            )
        self.own_tools = ToolRegistry.of(tools)
        if isinstance(toolsets, Mapping):
            self.namespaces: list[str | None] = [check_name(str(n)) for n in toolsets]
            self.toolsets = list(toolsets.values())
        else:
            self.toolsets = list(toolsets)
            self.namespaces = [None] * len(self.toolsets)
        self.requires_approval = _checked_policy(requires_approval)
        options.setdefault("returns_printed_text", True)  # call_tool returns it
        self.programmatic = ProgrammaticToolset(self.own_tools, kernel=kernel, **options)
        self._id = id
        self._kernel_users = _KernelUsers(self.programmatic)
        self._entered = _Entered(self)
        # Scripts running, by the id of their execute_tool_script call: a run resumed
        # with DeferredToolResults finds the one it resumes here.
        self._scripts: dict[str, _LiveScript] = {}
        self._ended: OrderedDict[str, _LiveScript] = OrderedDict()

    @property
    def id(self) -> str | None:
        return self._id

    @property
    def waiting_scripts(self) -> dict[str, list[ToolCallPart]]:
        """The scripts that wait for the application's decisions, by the id of their
        ``execute_tool_script`` call, with the calls each waits on."""
        return {
            call_id: [waiting.call for waiting in script.deferred.values()]
            for call_id, script in self._scripts.items()
            if not script.followed and script.deferred
        }

    async def wait_scripts(self) -> None:
        """Wait until every script of this toolset has ended. A script left waiting for
        decisions ends once a resumed run decides them, or when its timeout passes;
        then it no longer holds the kernel (closed after its last user)."""
        while self._scripts:
            tasks = [script.task for script in self._scripts.values() if script.task]
            await asyncio.gather(*tasks, return_exceptions=True)

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

    def _stop_answered(self, ctx: RunContext[Any]) -> None:
        """Stop the waiting scripts whose ``execute_tool_script`` call the run answered
        without them: the application denied the script call as a whole, and the model
        was told so."""
        waiting = {call_id for call_id, script in self._scripts.items() if not script.followed}
        if not waiting:
            return
        for message in ctx.messages:
            if isinstance(message, ModelRequest):
                for part in message.parts:
                    if isinstance(part, ToolReturnPart) and part.tool_call_id in waiting:
                        self._stop([part.tool_call_id])

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        return await self._call(self.toolsets, name, tool_args, ctx, set())

    def _list(
        self, listed_by: AbstractToolset[Any], ctx: RunContext[Any]
    ) -> dict[str, ToolsetTool[Any]]:
        self._stop_answered(ctx)
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
        parked: set[str],
    ) -> Any:
        """One of our two tools, for the run ``ctx`` belongs to: its toolsets' tools are
        listed and served to this call's script alone, called with ``ctx``. ``parked``
        collects the ids of the scripts this run leaves waiting for decisions."""
        if name == "get_execution_environment":
            serving = await self._serving(toolsets, ctx, _LiveScript("environment", None))
            return await serving.get_execution_environment()
        call_id = ctx.tool_call_id or f"script-{uuid.uuid4().hex[:12]}"
        script = self._resumed(call_id, ctx) if ctx.tool_call_approved else None
        if script is None:
            script = await self._start(toolsets, ctx, call_id, str(tool_args.get("script", "")))
        else:
            await script.binding.bind(toolsets, ctx)
            script.resume(_decisions(ctx.tool_call_metadata))
        ended_waiting = script.task is not None and script.task.done()
        try:
            result = await script.follow()
        except asyncio.CancelledError:
            script.stop()  # the run gave up on it: nobody will resume it
            raise
        except Exception as exc:  # the contract's errors: the model reads them and retries
            said = " (it ended while it waited for decisions on its tool calls)"
            raise ToolFailed(error_text(exc) + (said if ended_waiting else "")) from None
        if result is None:  # it waits for decisions no handler made: the run ends
            script.followed = False
            parked.add(call_id)
            raise ApprovalRequired(metadata={SCRIPT_CALLS: script.waiting_calls()})
        printed = "".join(part for part in (result.stdout, result.stderr) if part)
        return ToolReturn(
            return_value=_returned(result),
            content=f"The script printed:\n{printed}" if printed else None,
            metadata={"stdout": result.stdout, "stderr": result.stderr},
        )

    def _resumed(self, call_id: str, ctx: RunContext[Any]) -> _LiveScript | None:
        """The script an approved ``execute_tool_script`` call resumes: one waiting for
        decisions, or one that ended while it waited; None for a call seen first."""
        script = self._scripts.get(call_id) or self._ended.pop(call_id, None)
        if script is not None:
            script.followed = True
        return script

    async def _start(
        self,
        toolsets: Sequence[AbstractToolset[Any]],
        ctx: RunContext[Any],
        call_id: str,
        source: str,
    ) -> _LiveScript:
        script = _LiveScript(call_id, self.programmatic.timeout.approval)
        serving = await self._serving(toolsets, ctx, script)
        self._scripts[call_id] = script
        script.task = asyncio.ensure_future(self._run(serving, source))
        script.task.add_done_callback(lambda _: self._script_ended(script))
        return script

    async def _run(self, serving: ProgrammaticToolset, source: str) -> ScriptResult:
        # The script keeps the kernel open while it runs, after the run that started it
        # ended with DeferredToolRequests too.
        async with self._kernel_users:
            return await serving.run_script(source)

    def _script_ended(self, script: _LiveScript) -> None:
        if self._scripts.get(script.call_id) is script:
            del self._scripts[script.call_id]
        if not script.followed:  # kept for the run that resumes it, to say how it ended
            self._ended[script.call_id] = script
            while len(self._ended) > ENDED_SCRIPTS_KEPT:
                self._ended.popitem(last=False)

    def _stop(self, call_ids: Collection[str]) -> None:
        """Stop these scripts, if they still wait (the run that left them failed)."""
        for call_id in call_ids:
            script = self._scripts.get(call_id)
            if script is not None and not script.followed:
                script.stop()

    async def _serving(
        self, toolsets: Sequence[AbstractToolset[Any]], ctx: RunContext[Any], script: _LiveScript
    ) -> ProgrammaticToolset:
        """``self.programmatic`` serving our tools and the toolsets' tools for ``ctx``:
        a copy of it (same kernel, options and kept namespace), so that runs at once
        never swap each other's tools (the kernel takes the tools per execution)."""
        listed = await script.binding.bind(toolsets, ctx)
        forwarded = [_forward(script.binding, key, tool) for key, tool in listed]
        own = [_asking_elsewhere(tool) for tool in self.own_tools.values()]
        served = self._named(forwarded, [place for (place, _), _ in listed])
        # How pydantic-ai (or the script's own tools) name each tool served.
        names = {tool.name: tool.name for tool in own}
        names.update({tool.name: f.name for tool, f in zip(served, forwarded, strict=True)})
        declared = {tool.name for tool in self.own_tools.values() if tool.requires_approval}
        declared |= {
            tool.name
            for tool, (_, listed_tool) in zip(served, listed, strict=True)
            if listed_tool.tool_def.kind == "unapproved"
        }
        policy = self.requires_approval
        if policy is True:
            declared = set(names)
        elif isinstance(policy, frozenset):
            declared |= {name for name, own_name in names.items() if {name, own_name} & policy}
        may_ask = {
            tool.name
            for tool, ((place, _), _) in zip(served, listed, strict=True)
            if callable(policy) or _may_ask(toolsets[place])
        }
        scripts_tools = _ScriptTools([*own, *served], script, names, self._asks(declared))
        scripts_tools.approved_by_call = frozenset(declared | may_ask)
        serving = copy.copy(self.programmatic)
        serving.tools = scripts_tools
        serving.approval_note = (sorted(declared), bool(may_ask - declared))
        return serving

    def _named(self, forwarded: list[ForeignTool], places: list[int]) -> list[Tool]:
        """The toolsets' tools as host tools, in their order: those of the toolsets
        given in a list beside ours, those of a named toolset as ``name.tool``."""
        groups: dict[str | None, list[int]] = {}
        for index, place in enumerate(places):
            groups.setdefault(self.namespaces[place], []).append(index)
        served: list[Tool | None] = [None] * len(forwarded)
        for namespace, indexes in groups.items():
            tools = [forwarded[index] for index in indexes]
            built = (
                foreign_tools(tools, taken=list(self.own_tools))
                if namespace is None
                else [t.renamed(f"{namespace}.{t.name}") for t in foreign_tools(tools)]
            )
            for index, tool in zip(indexes, built, strict=True):
                served[index] = tool
        return [tool for tool in served if tool is not None]

    def _asks(self, declared: set[str]) -> Callable[[str, str, dict[str, Any]], bool]:
        """Whether a call (by its name in scripts, its own name, its arguments) needs
        approval before it runs."""
        policy = self.requires_approval

        def asks(name: str, own_name: str, arguments: dict[str, Any]) -> bool:
            if name in declared:
                return True
            return callable(policy) and bool(policy(own_name, arguments))

        return asks


class _CodeModeRun(AbstractToolset[Any]):
    """A ``CodeModeToolset`` for one agent run: the run's toolsets, entered for the
    run; the kernel and everything else of the toolset it comes from."""

    def __init__(self, shared: CodeModeToolset, toolsets: list[AbstractToolset[Any]]) -> None:
        self.shared = shared
        self.toolsets = toolsets
        self._entered = _Entered(shared)
        self.parked: set[str] = set()  # scripts this run left waiting for decisions

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
        if exc and exc[0] is not None:  # the run failed: nobody will resume its scripts
            self.shared._stop(self.parked)
        await self._entered.exit()
        return None

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        return self.shared._list(self, ctx)

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        return await self.shared._call(self.toolsets, name, tool_args, ctx, self.parked)


class _KernelUsers:
    """The kernel of a ``CodeModeToolset``, started by the first of its users (the
    toolset entered, its runs, its scripts) and closed by the last."""

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


# -- approval inside scripts -------------------------------------------------------------


@dataclass(eq=False)
class _Waiting:
    """A script's call waiting for a decision."""

    call: ToolCallPart
    metadata: dict[str, Any] | None
    decided: asyncio.Future[tuple[Decision, Any]]
    counted: bool = False  # counted as running again, the moment it was decided


class _LiveScript:
    """An ``execute_tool_script`` call's script, running in the kernel, and its calls
    that wait for a decision: asked of the run's ``HandleDeferredToolCalls`` handlers
    first (the calls that arrive in one loop turn together), then, when none decides,
    of the application, through the ``DeferredToolRequests`` the run ends with.

    Args:
        call_id: The id of the ``execute_tool_script`` call.
        approval_timeout: Seconds a call may wait for a decision before it is denied.
    """

    def __init__(self, call_id: str, approval_timeout: float | None) -> None:
        self.call_id = call_id
        self.approval_timeout = approval_timeout
        self.binding = _Binding()
        self.task: asyncio.Task[ScriptResult] | None = None
        self.followed = True  # a run waits for it: calls are asked of its handlers
        self.deferred: dict[str, _Waiting] = {}  # waiting for the application
        self._running = 0  # calls neither finished nor waiting for a decision
        self._asking = 0  # calls a handler is being asked about
        self._batch: list[_Waiting] = []
        self._asked: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._numbers = itertools.count(1)

    def next_id(self) -> str:
        """An id for one of its calls, unique in the agent run."""
        return f"{self.call_id}:{next(self._numbers)}"

    def call_started(self) -> None:
        self._running += 1
        self._changed.set()

    def call_ended(self) -> None:
        self._running -= 1
        self._changed.set()

    @property
    def blocked(self) -> bool:
        """It waits for the application's decisions, and for nothing else."""
        return bool(self.deferred) and self._running == 0 and self._asking == 0

    async def decide(
        self, call: ToolCallPart, metadata: dict[str, Any] | None
    ) -> tuple[Decision, Any]:
        """Wait for the decision about ``call``: (approval or denial, the metadata given
        with it)."""
        waiting = _Waiting(call, metadata, asyncio.get_running_loop().create_future())
        self._running -= 1
        if self.followed:
            self._asking += 1
            self._batch.append(waiting)
            if len(self._batch) == 1:  # the calls of this loop turn are asked together
                asyncio.get_running_loop().call_soon(self._ask_batch)
        else:
            self.deferred[call.tool_call_id] = waiting
        self._changed.set()
        try:
            if self.approval_timeout is None:
                return await waiting.decided
            return await asyncio.wait_for(asyncio.shield(waiting.decided), self.approval_timeout)
        except asyncio.TimeoutError:
            message = f"no decision within {self.approval_timeout:g} s (the approval timeout)"
            return ToolDenied(message), None
        finally:
            self.deferred.pop(call.tool_call_id, None)
            if not waiting.counted:
                self._running += 1
            self._changed.set()

    def resume(self, decisions: Mapping[str, Decision] | None) -> None:
        """A run resumes the script with these decisions (``None``: allow every call it
        waits on); its later calls are asked of that run's handlers."""
        self.followed = True
        for call_id, waiting in list(self.deferred.items()):
            decision = ToolApproved() if decisions is None else decisions.get(call_id)
            if decision is not None:
                self._settle(waiting, decision, None)

    def waiting_calls(self) -> list[dict[str, Any]]:
        """The calls waiting for the application, as ``DeferredToolRequests`` metadata."""
        return [
            {
                "tool_call_id": waiting.call.tool_call_id,
                "tool_name": waiting.call.tool_name,
                "args": waiting.call.args,
                "metadata": waiting.metadata,
            }
            for waiting in self.deferred.values()
        ]

    async def follow(self) -> ScriptResult | None:
        """The script's result, once it ends (raising what it raised); ``None`` as soon
        as it waits for nothing but the application's decisions."""
        assert self.task is not None
        while not self.task.done():
            if self.blocked:
                return None
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({self.task, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
        return self.task.result()

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _settle(self, waiting: _Waiting, decision: Decision, metadata: Any) -> None:
        self.deferred.pop(waiting.call.tool_call_id, None)
        if not waiting.decided.done():
            waiting.decided.set_result((decision, metadata))
            waiting.counted = True
            self._running += 1  # now, not when it wakes: it no longer only waits
            self._changed.set()

    def _ask_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._ask(batch))
        self._asked.add(task)
        task.add_done_callback(self._asked.discard)

    async def _ask(self, batch: list[_Waiting]) -> None:
        """Ask the run's handlers about a batch; what none decides waits for the
        application."""
        try:
            decided, metadata = await self._ask_handlers(batch)
        except Exception as exc:  # a failing handler denies, never allows
            denial = ToolDenied(f"the approval handler failed ({type(exc).__name__}: {exc})")
            decided, metadata = {waiting.call.tool_call_id: denial for waiting in batch}, {}
        self._asking -= len(batch)
        for waiting in batch:
            decision = decided.get(waiting.call.tool_call_id)
            if waiting.decided.done():
                continue  # the call was cancelled meanwhile
            if isinstance(decision, ToolApproved | ToolDenied):
                self._settle(waiting, decision, metadata.get(waiting.call.tool_call_id))
            else:
                self.deferred[waiting.call.tool_call_id] = waiting
        self._changed.set()

    async def _ask_handlers(self, batch: list[_Waiting]) -> tuple[dict[str, Any], dict[str, Any]]:
        ctx = self.binding.ctx
        manager = ctx.tool_manager if ctx is not None else None
        if manager is None or not self.followed:
            return {}, {}
        requests = DeferredToolRequests(
            approvals=[waiting.call for waiting in batch],
            metadata={w.call.tool_call_id: w.metadata for w in batch if w.metadata},
        )
        results = await manager.resolve_deferred_tool_calls(requests)
        if results is None:
            return {}, {}
        return dict(results.to_tool_call_results()), dict(results.metadata)


class _Binding:
    """What a script's pydantic-ai tools are called through: a run's toolsets and
    context. A run that resumes the script binds it to itself (the toolsets of the run
    that started it may be closed by now)."""

    def __init__(self) -> None:
        self.ctx: RunContext[Any] | None = None
        self.tools: dict[tuple[int, str], tuple[AbstractToolset[Any], ToolsetTool[Any]]] = {}

    async def bind(
        self, toolsets: Sequence[AbstractToolset[Any]], ctx: RunContext[Any]
    ) -> list[tuple[tuple[int, str], ToolsetTool[Any]]]:
        """List the toolsets' tools for ``ctx``, and call them so from now on.

        Returns:
            Each tool listed, by its key (the toolset's place, the tool's name).
        """
        listed = await asyncio.gather(*(toolset.get_tools(ctx) for toolset in toolsets))
        self.ctx = ctx
        self.tools = {
            (place, tool.tool_def.name): (toolset, tool)
            for place, (toolset, tools) in enumerate(zip(toolsets, listed, strict=True))
            for tool in tools.values()
        }
        return [(key, tool) for key, (_, tool) in self.tools.items()]


@dataclass(eq=False)
class _ScriptCall:
    """One call a script makes, as the forwarded tool sees it (a context variable)."""

    id: str
    approved: bool = False
    approval_metadata: Any = None
    asks: dict[str, Any] | None = None  # the tool raised ApprovalRequired with this


_script_call: contextvars.ContextVar[_ScriptCall | None] = contextvars.ContextVar(
    "progtc_kernel_script_call", default=None
)


class _AsksApproval(Exception):
    """The forwarded tool raised ``ApprovalRequired``: the call waits for a decision."""


class _ScriptTools(ToolRegistry):
    """The tools of one script: each call counted (the script is blocked when nothing
    but decisions runs), and asked about first when it needs approval.

    Args:
        tools: The tools, by their names in scripts.
        script: The script.
        names: Each tool's own name (as pydantic-ai knows it), by its name in scripts.
        asks: Whether a call needs approval before it runs.
    """

    def __init__(
        self,
        tools: list[Tool],
        script: _LiveScript,
        names: dict[str, str],
        asks: Callable[[str, str, dict[str, Any]], bool],
    ) -> None:
        super().__init__(tools)
        self.script = script
        self.names = names
        self.asks = asks

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        threads: ToolThreads | None = None,
        *,
        on_queued: QueueHook | None = None,
        on_started: QueueHook | None = None,
    ) -> Outcome:
        own_name = self.names.get(name, name)
        call = _ScriptCall(self.script.next_id())
        token = _script_call.set(call)
        self.script.call_started()
        try:
            if self.asks(name, own_name, arguments):
                denied = await self._approve(call, own_name, arguments, None, on_queued, on_started)
                if denied is not None:
                    return denied
            outcome = await self._run(call, name, arguments, threads, on_queued, on_started)
            if call.asks is not None and not call.approved:
                denied = await self._approve(
                    call, own_name, arguments, call.asks, on_queued, on_started
                )
                if denied is not None:
                    return denied
                outcome = await self._run(call, name, arguments, threads, on_queued, on_started)
            return outcome
        finally:
            _script_call.reset(token)
            self.script.call_ended()

    async def _run(
        self,
        call: _ScriptCall,
        name: str,
        arguments: dict[str, Any],
        threads: ToolThreads | None,
        on_queued: QueueHook | None,
        on_started: QueueHook | None,
    ) -> Outcome:
        if call.approved and isinstance(call.approval_metadata, _Overridden):
            arguments = call.approval_metadata.arguments
        return await super().call(
            name, arguments, threads, on_queued=on_queued, on_started=on_started
        )

    async def _approve(
        self,
        call: _ScriptCall,
        own_name: str,
        arguments: dict[str, Any],
        metadata: dict[str, Any] | None,
        on_queued: QueueHook | None,
        on_started: QueueHook | None,
    ) -> Outcome | None:
        """Wait for the decision; the denial's outcome, or None when approved."""
        if on_queued is not None:
            on_queued()  # the kernel does not charge the wait to the tool-call timeout
        request = ToolCallPart(own_name, arguments, tool_call_id=call.id)
        decision, decided_metadata = await self.script.decide(request, metadata)
        if on_started is not None:
            on_started()
        if isinstance(decision, ToolDenied):
            return failure("denied", "ToolDeniedError", decision.message)
        call.approved = True
        call.approval_metadata = decided_metadata
        if decision.override_args is not None:
            call.approval_metadata = _Overridden(decision.override_args, decided_metadata)
        return None


@dataclass(frozen=True)
class _Overridden:
    """An approval that gave other arguments for the call."""

    arguments: dict[str, Any]
    metadata: Any


def _forward(binding: _Binding, key: tuple[int, str], tool: ToolsetTool[Any]) -> ForeignTool:
    """A tool a toolset listed, called through that toolset of the run the script is
    bound to (as pydantic-ai's ``CombinedToolset`` does: a prefixed or filtered toolset
    knows its tools by names their own toolset does not) by its listed name (scripts
    may know it by another: see ``progtc_kernel.host.naming``), with the run's context
    for this call (its own ``tool_call_id``; approved, once it was)."""
    definition = tool.tool_def

    async def call(arguments: dict[str, Any]) -> Any:
        toolset, listed = binding.tools[key]
        validated = listed.args_validator.validate_python(arguments)
        script_call = _script_call.get()
        ctx = binding.ctx
        assert ctx is not None
        if script_call is not None:
            metadata = script_call.approval_metadata
            ctx = replace(
                ctx,
                tool_name=definition.name,
                tool_call_id=script_call.id,
                tool_call_approved=script_call.approved,
                tool_call_metadata=(
                    metadata.metadata if isinstance(metadata, _Overridden) else metadata
                ),
            )
        try:
            value = await toolset.call_tool(definition.name, validated, ctx, listed)
        except ApprovalRequired as exc:
            if script_call is None or script_call.approved:
                raise PermissionError(
                    f"{definition.name} asked for approval again after it was approved"
                ) from None
            script_call.asks = exc.metadata or {}
            raise _AsksApproval from None
        except CallDeferred:
            raise PermissionError(
                f"{definition.name} asks to be deferred (run outside the agent), which a "
                "call from a script cannot wait for: give that tool to the agent beside "
                "CodeModeToolset, not in its toolsets"
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


def _asking_elsewhere(tool: Tool) -> Tool:
    """A tool of our own that requires approval, served without the kernel's approval
    (which would wait for ``decide``): here pydantic-ai decides (``_ScriptTools``)."""
    if not tool.requires_approval:
        return tool
    served = copy.copy(tool)
    object.__setattr__(served, "requires_approval", False)  # a frozen dataclass, too
    return served


def _may_ask(toolset: AbstractToolset[Any]) -> bool:
    """Whether calls of this toolset's tools may ask for approval by their arguments."""
    if isinstance(toolset, ApprovalRequiredToolset):
        return True
    if isinstance(toolset, WrapperToolset):
        return _may_ask(toolset.wrapped)
    if isinstance(toolset, CombinedToolset):
        return any(_may_ask(inner) for inner in toolset.toolsets)
    return False


def _checked_policy(policy: Any) -> RequiresApproval:
    if policy is None or policy is False or policy is True or callable(policy):
        return policy or None
    if isinstance(policy, str) or not isinstance(policy, Collection):
        raise TypeError(
            f"requires_approval={policy!r:.80}: give True (every call), a collection of "
            "tool names, or a function (tool, arguments) -> bool"
        )
    return frozenset(str(name) for name in policy)


def _decisions(metadata: Any) -> dict[str, Decision] | None:
    """The decisions ``script_results`` put in an approved call's metadata; ``None``
    when it has none (the script call as a whole was approved: allow every call)."""
    if not isinstance(metadata, Mapping) or SCRIPT_DECISIONS not in metadata:
        return None
    return {
        str(call_id): _as_decision(decision)
        for call_id, decision in dict(metadata[SCRIPT_DECISIONS]).items()
    }


def _as_decision(decision: Any) -> Decision:
    if decision is True:
        return ToolApproved()
    if decision is False:
        return ToolDenied()
    return _DECISION.validate_python(decision)


def script_calls(requests: DeferredToolRequests) -> DeferredToolRequests:
    """The calls that scripts wait on, each as a request of its own, beside the others.

    A run that ends while a script waits for decisions defers its
    ``execute_tool_script`` call; this puts in its place the calls the script waits on,
    by their tools' own names and arguments, with ids of their own: decide them as any
    other (``build_results``), then pass the results through ``script_results``.

    Args:
        requests: The ``DeferredToolRequests`` an agent run ended with.

    Returns:
        The same requests, a script's call replaced by the calls it waits on.
    """
    approvals: list[ToolCallPart] = []
    metadata = {
        call_id: value
        for call_id, value in requests.metadata.items()
        if not _script_waits(requests, call_id)
    }
    for call in requests.approvals:
        waiting = _waiting_in(requests, call.tool_call_id)
        if waiting is None:
            approvals.append(call)
            continue
        for item in waiting:
            approvals.append(
                ToolCallPart(item["tool_name"], item["args"], tool_call_id=item["tool_call_id"])
            )
            if item.get("metadata"):
                metadata[item["tool_call_id"]] = item["metadata"]
    return replace(requests, approvals=approvals, metadata=metadata)


def script_results(
    requests: DeferredToolRequests, results: DeferredToolResults
) -> DeferredToolResults:
    """``results`` about ``script_calls(requests)``, as the agent run takes them.

    The decisions about a script's calls become an approval of its
    ``execute_tool_script`` call carrying them: the script carries on, each call
    allowed or denied (``ToolDenied(message)`` raises ``ToolDeniedError`` with the
    message in the script). Other results pass as they are.

    Args:
        requests: The ``DeferredToolRequests`` the agent run ended with.
        results: The decisions about ``script_calls(requests)``.

    Returns:
        The results to resume the run with (``deferred_tool_results=``).
    """
    script_of = {
        item["tool_call_id"]: call.tool_call_id
        for call in requests.approvals
        for item in _waiting_in(requests, call.tool_call_id) or ()
    }
    resumed = DeferredToolResults(
        calls=dict(results.calls),
        metadata={k: v for k, v in results.metadata.items() if k not in script_of},
        answered_by={k: v for k, v in results.answered_by.items() if k not in script_of},
    )
    decisions: dict[str, dict[str, Any]] = {}
    for call_id, approval in results.approvals.items():
        script = script_of.get(call_id)
        if script is None:
            resumed.approvals[call_id] = approval
        else:
            decision = _as_decision(approval)
            decisions.setdefault(script, {})[call_id] = _DECISION.dump_python(decision, mode="json")
    for script, decided in decisions.items():
        resumed.approvals[script] = ToolApproved()
        resumed.metadata[script] = {SCRIPT_DECISIONS: decided}
    return resumed


def _waiting_in(requests: DeferredToolRequests, call_id: str) -> list[dict[str, Any]] | None:
    metadata = requests.metadata.get(call_id)
    waiting = metadata.get(SCRIPT_CALLS) if isinstance(metadata, Mapping) else None
    return list(waiting) if isinstance(waiting, list) else None


def _script_waits(requests: DeferredToolRequests, call_id: str) -> bool:
    return _waiting_in(requests, call_id) is not None


def _returned(result: ScriptResult) -> str | list[str | BinaryContent]:
    """What the model gets back from a script: the JSON, then what the script
    displayed, in the tool's result itself (pydantic-ai sends images there natively, or
    in a message after it to a model whose tool results hold only text), then what was
    left out past the size limits, said. Just the JSON when nothing was displayed."""
    if not result.outputs and not result.outputs_left_out:
        return result.json_text
    returned: list[str | BinaryContent] = [result.json_text]
    returned.extend(
        BinaryContent(output.data, media_type=output.mime_type)
        if output.is_image
        else output.described()
        for output in result.outputs
    )
    if result.outputs_left_out:
        returned.append(result.outputs_left_out)
    return returned


def _as_returned(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema of what a forwarded tool's call returns. pydantic-ai hands back an MCP
    tool's ``{"result": value}`` (how the MCP SDK wraps a plain value) as ``value``."""
    properties = (schema or {}).get("properties")
    if isinstance(properties, dict) and list(properties) == ["result"]:
        inner = properties["result"]
        return inner if isinstance(inner, dict) else None
    return schema
