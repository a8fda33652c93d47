"""``ProgrammaticToolset``: the two tools an agent uses to call the host's tools
through a script (the "ProgrammaticToolset" contract).

* ``get_execution_environment()``: how to write a script, the supported modules,
  and a typed stub for every tool (see ``environment.py``).
* ``execute_tool_script(script)``: runs the script's ``run()`` in the kernel and
  returns the JSON of the dict it returned. Errors are raised as the contract
  says: ``SyntaxError``, ``ValueError`` (an unsupported import, no ``run()``),
  ``TypeError`` (not a dict), else the script's own exception; each message names
  the fix and the script's line.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from ..approval import Approver, RequiresApproval
from ..exceptions import KernelDiedError, ScriptError, ScriptTimeoutError
from ..host import tracing
from ..host.results import ExecutionResult, ToolCallRecord
from ..host.threads import ToolThreads
from ..host.tool_kernel import ToolKernel
from ..host.tools import Outcome, QueueHook, ToolRegistry, ToolsLike, failure
from ..kernel_side.catalog import LIST_TOOLS_ABOVE
from ..kernels.base import KernelLike
from ..protocol import OUTCOME_MIME, run_script_code
from ..timeouts import SCRIPT_TIMEOUT, USE_DEFAULT, Timeout, TimeoutLike, resolve
from .environment import ApprovalNote, environment, modules_of
from .imports import check_script
from .outputs import MAX_OUTPUT_BYTES, MAX_TOTAL_OUTPUT_BYTES, ScriptOutput, script_outputs
from .typecheck import ScriptChecker, checker_installed, script_error

# A script's returned JSON passed on at most: a model's context holds far less, and
# 50 MB took 99 s through MCP's stdio layer.
MAX_RESULT_CHARS = 200_000


class ScriptResult(BaseModel):
    """A script's run: what ``run()`` returned, what it printed and displayed.

    Attributes:
        value: The dict ``run()`` returned.
        json_text: ``value`` as JSON, cut to ``max_result_chars``.
        stdout: What the script printed, cut to ``max_output_chars``.
        stderr: What it wrote to stderr.
        tool_calls: The tool calls it made.
        duration: Seconds the script took.
        outputs: What it displayed (images, HTML, markdown, text), in order, within
            ``max_output_bytes`` each and ``max_total_output_bytes`` in all.
        outputs_left_out: The outputs left out past those limits, said in words for the
            model (``''`` when none were).
    """

    value: dict[str, Any]
    json_text: str
    """``value`` as the JSON the script produced (what ``execute_tool_script`` returns),
    cut to ``max_result_chars`` (the cut is said; cut, it is no longer JSON)."""
    stdout: str = ""
    """What the script printed, cut to ``max_output_chars`` (the cut is said)."""
    stderr: str = ""
    tool_calls: list[ToolCallRecord] = []
    duration: float = 0.0
    outputs: list[ScriptOutput] = []
    outputs_left_out: str = ""


def _check_kernel_approval(approve: Approver | None, requires_approval: RequiresApproval) -> None:
    """Approval options are the kernel's: a ``ToolKernel`` given has its own."""
    if approve is not None or requires_approval not in (None, False):
        raise ValueError(
            "approve= and requires_approval= go to the kernel, and the ToolKernel given has "
            "its own: set them there, ToolKernel(..., approve=..., requires_approval=...), "
            "or give the toolset a LocalKernel/RemoteKernel instead"
        )


def _check_kernel_timeouts(timeout: TimeoutLike, kernel: ToolKernel) -> None:
    """A ``Timeout`` whose tool-call or start timeout a kernel given would not use is
    refused: the kernel has its own, sent to it when it starts."""
    if not isinstance(timeout, Timeout):
        return
    theirs = kernel.timeout
    if (timeout.tool_call, timeout.start, timeout.approval) != (
        theirs.tool_call,
        theirs.start,
        theirs.approval,
    ):
        raise ValueError(
            f"timeout={timeout!r} sets tool-call and start timeouts, but the kernel "
            f"given has its own ({theirs!r}): set them on the kernel, "
            "ToolKernel(..., timeout=Timeout(tool_call=...)), and give the toolset "
            "only the script's seconds"
        )


class ProgrammaticToolset:
    """The agent-facing tools ``get_execution_environment`` and ``execute_tool_script``.

    A kernel given unstarted (or the toolset's own) is started and closed with the
    toolset: ``async with``, or ``start()`` and ``close()``.

    Example:
        ```python
        async with ProgrammaticToolset(tools=[get_weather, search_database]) as toolset:
            env = await toolset.get_execution_environment()
            out = await toolset.execute_tool_script(script)
        ```

    Args:
        tools: The host tools scripts may call (see ``ToolRegistry``).
        kernel: The kernel scripts run on, as ``ToolKernel`` takes it (``LocalKernel``,
            ``RemoteKernel``...), or a ``ToolKernel``; default: a local kernel of its own.
        supported_modules: The modules a script may import, as names or a mapping of
            name to description (default: ``DEFAULT_MODULES``, pure computation).
        max_tool_calls: Tool calls one script may make (``None``: no limit).
        timeout: Seconds a script may run (default 60; ``None``: no limit), or a
            ``Timeout`` that also sets how long one tool call may take (the script gets
            a ``ToolTimeoutError`` it can catch) and how long the kernel may take to
            start. A ``ToolKernel`` given keeps its own.
        fresh_namespace: Each script starts with no names left by earlier ones; False
            keeps them.
        max_output_chars: How much of what a script prints is returned.
        max_result_chars: How much of the JSON of what ``run()`` returns is passed on (a
            model's context holds little); a longer one is cut, and the cut said.
        max_output_bytes: The most bytes one displayed output (an image, an HTML
            table) may have to be returned (default 1 MB); a bigger one is left out,
            and ``outputs_left_out`` says so.
        max_total_output_bytes: The most bytes all of a script's displayed outputs may
            have (default 3 MB); those past it are left out, and said.
        returns_printed_text: Whether the caller passes what a script prints and
            displays on to the model (``run_script``'s ``stdout`` and ``outputs``, as
            the MCP server and ``CodeModeToolset`` do); ``execute_tool_script`` alone
            returns only the JSON. The instructions say which.
        approve: Decides each call that needs approval (an ``Approver``: takes an
            ``ApprovalRequest``, returns an ``Approval``, async or not); the call waits
            meanwhile. ``None``: calls wait for ``kernel.decide(...)``. A denied call
            raises ``ToolDeniedError`` in the script, which may catch it; uncaught, the
            script fails with it (a ``ScriptError``). A ``ToolKernel`` given keeps its
            own.
        list_tools_above: With more tools than this, the environment lists them by
            name and one line instead of a full stub each, and scripts find the rest
            with ``tools.catalog.search(words)`` and ``tools.catalog.describe(name)``
            (the instructions say how). Default: 30, about 15,000 characters of stubs;
            ``0``: always; ``None``: never.
        requires_approval: Which calls need approval besides those whose tool requires
            it (``Tool.from_function(f, requires_approval=True)``): ``True`` every
            call, a collection of tool names, or a function ``(tool, arguments) ->
            bool``. The instructions name these tools and say a denial is an exception
            the script may catch. A ``ToolKernel`` given keeps its own.
        check_types: Type-check each script against the tools' stubs before it runs
            (with ``ty``, the ``typecheck`` extra): a problem found is raised as the
            contract's ``TypeError`` (``ValueError`` for an import ``tools`` lacks)
            with the script's line, and the script does not run. ``None``: on when
            ``ty`` is installed.
        trace_content: With OpenTelemetry tracing on, also record each script in its
            span and each tool call's arguments and result in its span (see
            ``ToolKernel``). A ``ToolKernel`` given keeps its own.

    Raises:
        ValueError: ``approve``, ``requires_approval`` or a ``Timeout``'s tool-call,
            start or approval seconds given with a ``ToolKernel``, which has its own.
        ModuleNotFoundError: ``check_types=True`` without ``ty``; the message names
            the command that installs it.
    """

    def __init__(
        self,
        tools: ToolsLike = None,
        *,
        kernel: ToolKernel | KernelLike | None = None,
        supported_modules: Mapping[str, str] | Iterable[str] | None = None,
        max_tool_calls: int | None = None,
        timeout: TimeoutLike = USE_DEFAULT,
        fresh_namespace: bool = True,
        max_output_chars: int = 20_000,
        max_result_chars: int = MAX_RESULT_CHARS,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        max_total_output_bytes: int = MAX_TOTAL_OUTPUT_BYTES,
        returns_printed_text: bool = False,
        approve: Approver | None = None,
        requires_approval: RequiresApproval = None,
        check_types: bool | None = None,
        list_tools_above: int | None = LIST_TOOLS_ABOVE,
        trace_content: bool = False,
    ) -> None:
        self.tools = ToolRegistry.of(tools)
        if list_tools_above is not None and list_tools_above < 0:
            raise ValueError(
                f"list_tools_above={list_tools_above!r}: give 0 or more tools (0: always "
                "list by name; None: always list every stub)"
            )
        self.list_tools_above = list_tools_above
        self.timeout = resolve(timeout, SCRIPT_TIMEOUT)
        if isinstance(kernel, ToolKernel):
            _check_kernel_approval(approve, requires_approval)
            self.kernel = kernel
        else:
            self.kernel = ToolKernel(
                self.tools,
                kernel=kernel,
                timeout=self.timeout,
                approve=approve,
                requires_approval=requires_approval,
                trace_content=trace_content,
            )
        _check_kernel_timeouts(timeout, self.kernel)
        self.modules = modules_of(supported_modules)
        self.max_tool_calls = max_tool_calls
        self.fresh_namespace = fresh_namespace
        self.max_output_chars = max_output_chars
        self.max_result_chars = max_result_chars
        self.returns_printed_text = returns_printed_text
        self.max_output_bytes = max_output_bytes
        self.max_total_output_bytes = max_total_output_bytes
        self._namespace_key = None if fresh_namespace else uuid.uuid4().hex
        self.checker = _checker(check_types, self.kernel)
        self._started_kernel = False
        # Which calls need approval, when someone other than the kernel decides it
        # (CodeModeToolset); None: the kernel's policy and the tools' own say.
        self.approval_note: ApprovalNote | None = None

    async def start(self) -> None:
        """Start the kernel, unless it runs already (given started)."""
        if not self.kernel.running:
            await self.kernel.start()
            self._started_kernel = True

    async def close(self) -> None:
        """Close the kernel if ``start()`` started it; one given started is left running."""
        if self._started_kernel:
            self._started_kernel = False
            await self.kernel.close()

    async def __aenter__(self) -> ProgrammaticToolset:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the two tools ----------------------------------------------------------------

    async def get_execution_environment(self) -> dict[str, Any]:
        """``{"instructions", "language", "supported_modules"}``, as the contract's
        ``ProgrammaticApiExecutionEnvironmentInfo``."""
        return environment(
            self.tools.specs(),
            self.modules,
            max_tool_calls=self.max_tool_calls,
            timeout=self.timeout.run,
            fresh_namespace=self.fresh_namespace,
            max_output_chars=self.max_output_chars if self.returns_printed_text else None,
            max_result_chars=self.max_result_chars,
            approval=self._approval_note(),
            list_tools_above=self.list_tools_above,
        )

    def _approval_note(self) -> ApprovalNote:
        """The tools each of whose calls needs approval, and whether calls of others
        may need it (a predicate over the arguments decides)."""
        if self.approval_note is not None:
            return self.approval_note
        policy = self.kernel.requires_approval
        names = [
            name
            for name, tool in self.tools.items()
            if tool.requires_approval
            or policy is True
            or (isinstance(policy, Collection) and name in policy)
        ]
        return names, callable(policy)

    async def execute_tool_script(self, script: str) -> str:
        """Run a script; return the JSON of the dict its ``run()`` returned.

        Args:
            script: Python source defining ``run()``, a plain or an ``async`` function.

        Returns:
            The JSON text, cut to ``max_result_chars`` (the cut said).

        Raises:
            SyntaxError: The script does not compile.
            ValueError: An import the toolset does not support, or no ``run()``.
            TypeError: ``run()`` returned something that is not a JSON-able dict.
            ScriptError: The script raised an exception that is not a built-in one (a
                built-in one is raised as itself).
        """
        return (await self.run_script(script)).json_text

    async def run_script(self, script: str) -> ScriptResult:
        """Run a script; return its value, what it printed and displayed, its tool calls.

        Args:
            script: Python source defining ``run()``, a plain or an ``async`` function.

        Returns:
            The value ``run()`` returned, what the script printed and displayed (within
            the limits, those left out said) and its tool calls.

        Raises:
            SyntaxError: The script does not compile.
            ValueError: An import the toolset does not support, or no ``run()``.
            TypeError: ``run()`` returned something that is not a JSON-able dict.
            ScriptError: The script raised an exception that is not a built-in one.
        """
        if not tracing.ENABLED:
            return await self._run_script(script)
        content = {"progtc_kernel.script": script} if self.kernel.trace_content else None
        with tracing.current_span("execute_tool_script", content):
            return await self._run_script(script)

    async def _run_script(self, script: str) -> ScriptResult:
        check_script(script, self.modules)
        await self._check_types(script)
        code = run_script_code(script, sorted(self.modules), self._namespace_key)
        result = await self.kernel.execute(
            code,
            tools=_Budgeted(self.tools, self.max_tool_calls),
            timeout=self.timeout.run,
            silent=True,
        )
        outcome = self._outcome(result)
        if not outcome["ok"]:
            raise _script_exception(outcome)
        text = str(outcome["json"])
        outputs, left_out = script_outputs(
            result.outputs,
            max_bytes=self.max_output_bytes,
            max_total_bytes=self.max_total_output_bytes,
            max_chars=self.max_output_chars,
        )
        return ScriptResult(
            value=json.loads(text),
            json_text=_cut(
                text,
                self.max_result_chars,
                (
                    "characters of the returned JSON were cut: return less (filter, count or "
                    "summarise in the script)"
                ),
            ),
            stdout=self._cut(result.stdout),
            stderr=self._cut(result.stderr),
            tool_calls=result.tool_calls,
            duration=result.duration,
            outputs=outputs,
            outputs_left_out=left_out,
        )

    async def _check_types(self, script: str) -> None:
        """Raise what the type checker finds in the script, before it runs."""
        if self.checker is None:
            return
        findings = await self.checker.check(
            script, self.tools.specs(), names_kept=not self.fresh_namespace
        )
        if findings:
            raise script_error(findings, script)

    def _outcome(self, result: ExecutionResult) -> dict[str, Any]:
        error = result.error
        if error is not None and error.kind == "timeout":
            raise ScriptTimeoutError(
                f"the script ran for more than {self.timeout.run or 0:g} s and was stopped: "
                "make it do less per script (fewer or faster tool calls), or split the work"
            )
        if error is not None and error.kind == "kernel_died":
            raise KernelDiedError(f"the kernel running the script died: {error.evalue}")
        for output in result.outputs:
            if OUTCOME_MIME in output.data:
                return dict(output.data[OUTCOME_MIME])
        if error is not None and error.ename in ("SystemExit", "KeyboardInterrupt"):
            raised = f"{error.ename}({error.evalue})" if error.evalue else error.ename
            raise ScriptError(
                error.ename,
                (
                    f"the script raised {raised}: a script cannot exit or interrupt the "
                    "kernel; return a dict from run(), or raise an Exception to fail"
                ),
            )
        what = f"{error.ename}: {error.evalue}" if error else "no outcome"
        raise ScriptError(
            "RuntimeError",
            f"the script runner failed ({what}); is "
            "progtc-kernel the same version in the kernel as here?",
        )

    def _cut(self, text: str) -> str:
        return _cut(
            text,
            self.max_output_chars,
            "characters were printed and cut; return data in the dict instead",
        )


def _checker(check_types: bool | None, kernel: ToolKernel) -> ScriptChecker | None:
    """The type checker scripts go through (None: they run unchecked). It resolves
    imports in the kernel's interpreter when the kernel runs here with one given."""
    if check_types is False or (check_types is None and not checker_installed()):
        return None
    python = getattr(kernel.lifecycle, "python", None)
    return ScriptChecker(python=python if isinstance(python, str) else None)


def _cut(text: str, limit: int, said: str) -> str:
    """``text`` cut to ``limit`` characters, saying how much more there was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[... {len(text) - limit:,} more {said}]"


class _Budgeted(ToolRegistry):
    """The toolset's tools, counting the calls of one script against its budget; each
    call goes to the registry given (which may do more than call the tool: see
    ``CodeModeToolset``)."""

    def __init__(self, tools: ToolRegistry, budget: int | None) -> None:
        super().__init__(tools)
        self.inner = tools
        self.budget = budget
        self.spent = 0

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        threads: ToolThreads | None = None,
        *,
        on_queued: QueueHook | None = None,
        on_started: QueueHook | None = None,
    ) -> Outcome:
        self.spent += 1
        if self.budget is not None and self.spent > self.budget:
            return failure(
                "tool",
                "CallBudgetExceeded",
                (
                    f"this script already made {self.budget} tool calls, its limit: make fewer "
                    "calls per script (batch lookups, or split the work over scripts)"
                ),
            )
        return await self.inner.call(
            name, arguments, threads, on_queued=on_queued, on_started=on_started
        )


def error_text(exc: BaseException) -> str:
    """A failed script's error as a model reads it, led by the exception's type
    (``ValueError: ...``; a ``ScriptError``'s text already starts with the script's)."""
    return str(exc) if isinstance(exc, ScriptError) else f"{type(exc).__name__}: {exc}"


def _script_exception(outcome: Mapping[str, Any]) -> Exception:
    """The exception the contract says to raise, with the script's line in its text."""
    kind, message = str(outcome["type"]), str(outcome["message"])
    if outcome.get("line"):
        where = f"line {outcome['line']}"
        if outcome.get("code"):
            where += f": `{outcome['code']}`"
        message = f"{message} ({where})"
    builtin = getattr(builtins, kind, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except TypeError:  # a builtin that wants more than a message
            pass
    return ScriptError(kind, message)
