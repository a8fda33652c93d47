"""ToolKernel: a kernel whose code can call your tools, known through a lifecycle and
a transport (``progtc_kernel.kernels``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..approval import Approval, ApprovalRequest, Approver, RequiresApproval
from ..exceptions import (
    KernelDiedError,
    KernelError,
    KernelNotStartedError,
    KernelStartError,
    ReentrantExecutionError,
)
from ..kernels.base import KernelLifecycle, KernelLike, Reconnecting
from ..protocol import HOLD_METADATA, install_modules_code
from ..timeouts import (
    DEFAULT_RESUME_GRACE,
    USE_DEFAULT,
    Timeout,
    TimeoutLike,
    UseDefault,
    resolve,
    run_seconds,
    with_old_keywords,
)
from . import tracing
from .bridge import ToolBridge, serving
from .events import (
    ApprovalCancelled,
    ApprovalDecided,
    ApprovalRequested,
    DisplayOutput,
    Event,
    ExecutionFinished,
    StreamOutput,
    ToolCallFinished,
    ToolCallStarted,
)
from .injection import ExtensionPolicy
from .rate_limits import rate_limit_window
from .results import ErrorKind, ExecutionResult, Output, RunError, ToolCallRecord
from .threads import DEFAULT_TOOL_THREADS
from .tools import ToolRegistry, ToolsLike

if TYPE_CHECKING:
    from jupyter_client.manager import KernelManager

log = logging.getLogger("progtc_kernel")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
_INJECTED_FILES = "<progtc_kernel "  # how kernel/bootstrap.py names the modules it brings
_SYNTAX_ERRORS = {"SyntaxError", "IndentationError", "TabError"}
_INTERRUPTS = {"KeyboardInterrupt", "CancelledError"}
# How long an interrupted or timed-out run may take to stop before the kernel restarts.
INTERRUPT_GRACE = 5.0


F = TypeVar("F", bound=Callable[..., Any])


def runs_code(method: F) -> F:
    """Mark a method that runs code on the kernel: its blocking form
    (``SyncToolKernel``) refuses to be called by a tool of the same kernel before it
    waits, in the caller's thread, where the tool's context is."""
    method.runs_code = True  # type: ignore[attr-defined]
    return method


class ToolKernel:
    """An IPython kernel with the ``tools`` module wired to host callables.

    ::

        async with ToolKernel(tools=[get_weather]) as kernel:
            result = await kernel.execute("from tools import get_weather\\n"
                                          "print(await get_weather('Paris', 'France'))")
            print(result.stdout)

    By default it starts a local kernel of its own on this interpreter, restarts it
    if it dies and shuts it down on close. State persists across ``execute`` calls;
    ``reset()`` clears it, ``restart()`` starts a fresh process. Another kernel is
    given as ``kernel=``: ``LocalKernel(python=..., cwd=..., env=...)`` for one of
    its own elsewhere, ``RemoteKernel(server, ...)`` for one on a Jupyter Server, or
    a kernel someone else runs (a jupyter_client manager or client, a connection
    file or dict). A kernel attached to is never replaced or restarted behind your
    back, its files are left alone, and it keeps running on close.

    Args:
        tools: Callables, ``Tool`` objects or a mapping of name to either.
        kernel: The kernel to run code on (see ``KernelLike``); default
            ``LocalKernel()``. An idle jupyter_client manager is started, and then
            owned.
        timeout: Seconds a run may take (default 30; ``None``: no limit), or a
            ``Timeout`` that also sets the tool-call and start timeouts
            (``Timeout(60, tool_call=5)``).
        tool_timeout: Deprecated spelling of ``Timeout(tool_call=...)``.
        max_in_flight: Tool calls outstanding at once.
        tool_threads: How many sync tools may run at once.
        startup_timeout: Deprecated spelling of ``Timeout(start=...)``.
        extension: How the kernel gets the extension (see ``ToolBridge``): by
            default it is loaded if the kernel has not, from the host's own code
            where the kernel lacks this version, so any kernel with ipykernel
            works; ``"installed"`` forbids bringing code, ``"loaded"`` sends nothing
            (a kernel from ``progtc-kernel serve``'s pool, or one whose profile
            loads it; saves a round trip).
        approve: Decides each tool call that needs approval: a function (sync or
            async) that takes an ``ApprovalRequest`` and returns an ``Approval``
            (``Approval.allow()``, ``.deny(message)``, ``.allow_for_run()``, or
            ``.later()`` to leave it to ``decide``). ``None``: such calls wait for
            ``decide``; ``stream()`` shows each as ``ApprovalRequested``.
        requires_approval: Which calls need approval, besides those of tools that
            require it themselves (``Tool.from_function(f, requires_approval=True)``):
            ``True`` (every call), a collection of tool names (``{"send_email"}``), or
            a function ``(tool, arguments) -> bool``.
        trace_content: With OpenTelemetry tracing on (``opentelemetry-api`` installed,
            a tracer provider set), also record the code in each run's span and the
            arguments and result of each tool call in its span
            (``gen_ai.tool.call.arguments`` / ``.result``); off by default, since
            they may hold what should not leave the host.
        **moved: Nothing: the options that describe a kernel (``python=``,
            ``server=``...) belong to ``LocalKernel`` and ``RemoteKernel``; given
            here, the error says where.

    Raises:
        TypeError: ``kernel`` is not a kernel, or an option of ``LocalKernel`` or
            ``RemoteKernel`` was given here; the message names the fix.
    """

    def __init__(
        self,
        /,
        tools: ToolsLike = None,
        *,
        kernel: KernelLike | None = None,
        timeout: TimeoutLike = USE_DEFAULT,
        tool_timeout: float | UseDefault | None = USE_DEFAULT,
        max_in_flight: int = 256,
        tool_threads: int = DEFAULT_TOOL_THREADS,
        startup_timeout: float | UseDefault | None = USE_DEFAULT,
        extension: ExtensionPolicy = "inject",
        approve: Approver | None = None,
        requires_approval: RequiresApproval = None,
        trace_content: bool = False,
        **moved: NoReturn,
    ) -> None:
        from ..kernels.resolve import moved_options, resolve_kernel

        if moved:
            raise moved_options(type(self).__name__, kernel, moved)
        self.tools = ToolRegistry.of(tools)
        self.timeout = with_old_keywords(
            resolve(timeout), tool_timeout=tool_timeout, startup_timeout=startup_timeout
        )
        self.max_in_flight = max_in_flight
        self.tool_threads = tool_threads
        self.extension = extension
        self.approve = approve
        self.requires_approval = requires_approval
        self.trace_content = trace_content
        self.lifecycle: KernelLifecycle = resolve_kernel(kernel)
        self._bridge: ToolBridge | None = None
        self._runs: dict[str, _Run] = {}
        self._lock = asyncio.Lock()
        self._dead = False
        self._gone: asyncio.Future[None] | None = None  # done once the kernel is gone
        self._closing = False
        self._ended_held: set[str] = set()  # held runs followed to their end

    @property
    def timeout(self) -> Timeout:
        """The kernel's timeouts; set a number (the run timeout) or a ``Timeout``."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: TimeoutLike) -> None:
        self._timeout = resolve(value, getattr(self, "_timeout", Timeout()))

    @property
    def running(self) -> bool:
        """Started (or attached) and not closed."""
        return self._bridge is not None

    @property
    def bridge(self) -> ToolBridge:
        if self._bridge is None:
            raise KernelNotStartedError(
                "the kernel is not started: use `async with ToolKernel(...)`"
            )
        return self._bridge

    @property
    def kernel_manager(self) -> KernelManager | None:
        """The jupyter_client manager of a local kernel, if there is one."""
        return getattr(self.lifecycle, "manager", None)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> ToolKernel:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start (or attach to) the kernel and register the tools; fails fast, with the
        kernel's own words, when it dies while starting."""
        try:
            await self.lifecycle.start()
            self._watch_kernel()
            # A client of our own session: km.client() would share the manager's
            # session id, hence the ZMQ identity, with any other client made that way.
            bridge = ToolBridge(
                self.lifecycle.connect(),
                self.tools,
                tool_call_timeout=self.timeout.tool_call,
                max_in_flight=self.max_in_flight,
                tool_threads=self.tool_threads,
                extension=self.extension,
                approve=self.approve,
                requires_approval=self.requires_approval,
                approval_timeout=self.timeout.approval,
            )
            bridge.calls.trace_content = self.trace_content
            bridge.add_message_listener(self._on_message)
            bridge.add_tool_listener(self._on_tool_event)
            self._bridge = bridge
            await self._while_alive(
                bridge.start(timeout=self.timeout.start, fresh=self.lifecycle.owned)
            )
        except BaseException:
            await self.close()
            raise

    def _watch_kernel(self) -> None:
        """Learn of the running kernel's end when it happens (``lifecycle.wait()``):
        after each start, restart or return of a kernel, since a new one runs then."""
        if self._gone is not None:
            self._gone.cancel()
        gone = self._gone = asyncio.ensure_future(self.lifecycle.wait())
        gone.add_done_callback(_ignore_outcome)  # a kernel may die with nobody waiting

    async def _while_alive(self, starting: Any) -> Any:
        """Await a start or restart, failing at once if the kernel dies meanwhile."""
        task = asyncio.ensure_future(starting)
        try:
            watched: set[asyncio.Future[Any]] = {task}
            if self._gone is not None:
                watched.add(self._gone)
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise KernelStartError(self.lifecycle.startup_failure())
        finally:
            task.cancel()

    async def close(self) -> None:
        self._closing = True
        self._detach_resumable_runs()
        if self._gone is not None:
            self._gone.cancel()
            self._gone = None
        if self._bridge is not None:
            await self._bridge.close()
            self._bridge = None
        await self.lifecycle.shutdown()

    async def restart(self) -> None:
        """A fresh kernel process: all state is gone, the tools stay."""
        async with self._lock:
            await self._restart()

    async def _restart(self) -> None:
        await self.lifecycle.restart()
        self._watch_kernel()
        self._dead = False
        await self._while_alive(self.bridge.reopen(timeout=self.timeout.start, fresh=True))

    def _lost_connection(self) -> bool:
        """A remote kernel's server was out of reach for longer than its
        ``reconnect_timeout``: the kernel may well have survived it."""
        lifecycle = self.lifecycle
        return isinstance(lifecycle, Reconnecting) and lifecycle.connection_lost(
            self.bridge.transport
        )

    async def _come_back(self) -> None:
        """Use the server again: the same kernel, state kept, if it survived; else a
        new one of ours (restarting the old one could only fail: it is gone)."""
        lifecycle = self.lifecycle
        assert isinstance(lifecycle, Reconnecting)
        survived = await lifecycle.reconnect(self.bridge.transport)
        self._watch_kernel()
        self._dead = False
        if survived:
            await self._while_alive(self.bridge.wait_ready(self.timeout.start))
        else:
            await self._while_alive(self.bridge.reopen(timeout=self.timeout.start, fresh=True))

    @runs_code
    async def reset(self) -> None:
        """Forget every variable and import of earlier executions (keeps the process)."""
        result = await self.execute("get_ipython().reset(new_session=False)", silent=True)
        result.raise_for_error()

    async def interrupt(self) -> None:
        await self.lifecycle.interrupt()

    # -- approval -----------------------------------------------------------------------

    async def decide(self, call_id: int, approval: Approval) -> None:
        """Decide a tool call that waits for approval (an ``ApprovalRequested`` event,
        or one of ``pending_approvals``); the code carries on at once.

        Example:
            ```python
            async for event in kernel.stream(code):
                if isinstance(event, ApprovalRequested):
                    await kernel.decide(event.request.call_id, Approval.allow())
            ```

        Args:
            call_id: The request's ``call_id``.
            approval: ``Approval.allow()``, ``Approval.deny(message)`` or
                ``Approval.allow_for_run()``.

        Raises:
            ValueError: No call with this id waits for a decision (the message lists
                those that do).
        """
        await self.bridge.decide(call_id, approval)

    async def confirm_waiting(self) -> None:
        """Wait until the kernel has confirmed the calls of resumable runs that wait
        here (for an approval, or a free thread) as not started: from then on, should
        this host exit or die, the next host that attaches gets them (at once after an
        ``ApprovalRequested``, the kernel may not have heard yet, and a host killed then
        leaves the call failing with ``HostDisconnectedError``).

        Example:
            ```python
            async for event in kernel.stream(code, resumable=True):
                if isinstance(event, ApprovalRequested):
                    await kernel.confirm_waiting()
                    break  # this host may go now: the next one is asked
            ```
        """
        if self._bridge is not None:
            await self._bridge.confirm_waiting()

    @property
    def pending_approvals(self) -> list[ApprovalRequest]:
        """The tool calls waiting for a decision, oldest first."""
        return self.bridge.pending_approvals if self._bridge is not None else []

    @runs_code
    async def install_modules(self, modules: Mapping[str, str]) -> None:
        """Make helper modules importable by the code.

        Each runs when first imported (it may ``from tools import ...``); a later call
        replaces them.

        Example:
            ```python
            await kernel.install_modules({"helpers": "def double(x):\\n    return 2 * x"})
            ```

        Args:
            modules: ``{name: source}``.

        Raises:
            ValueError: A name is not an identifier, is ``tools``, or shadows a module the
                kernel has.
        """
        result = await self.execute(install_modules_code(modules), silent=True, timeout=None)
        if result.error is not None:
            if result.error.ename == "ValueError":
                raise ValueError(result.error.evalue)
            result.raise_for_error()

    # -- running code -----------------------------------------------------------------

    @runs_code
    async def execute(
        self,
        code: str,
        *,
        tools: ToolsLike = None,
        timeout: TimeoutLike = USE_DEFAULT,
        silent: bool = False,
        resumable: bool | float = False,
    ) -> ExecutionResult:
        """Run code; returns its output, error and tool calls. Never raises for the
        code's own errors: check ``result.ok`` or call ``result.raise_for_error()``.

        Args:
            code: the Python (IPython) source to run.
            tools: replaces the tool set for this run.
            timeout: seconds this run may take (``None``: no limit; ``USE_DEFAULT``:
                the kernel's ``timeout.run``; a ``Timeout``: its ``run``).
            silent: run without history or displayed results.
            resumable: let the run outlive this host (see ``stream``).

        Returns:
            The run's output, error and tool calls.
        """
        result: ExecutionResult | None = None
        async for event in self.stream(
            code, tools=tools, timeout=timeout, silent=silent, resumable=resumable
        ):
            if isinstance(event, ExecutionFinished):
                result = event.result
        assert result is not None
        return result

    @runs_code
    async def stream(
        self,
        code: str,
        *,
        tools: ToolsLike = None,
        timeout: TimeoutLike = USE_DEFAULT,
        silent: bool = False,
        resumable: bool | float = False,
    ) -> AsyncGenerator[Event, None]:
        """Run code, yielding output and tool-call events live; the last one is
        ``ExecutionFinished`` with the result. Leaving early interrupts the run: wrap
        it in ``contextlib.aclosing`` to have that happen at once.

        Args:
            code: the Python (IPython) source to run.
            tools: replaces the tool set for this run.
            timeout: seconds after which the run is interrupted, its output so far
                kept (``None``: no limit; ``USE_DEFAULT``: the kernel's
                ``timeout.run``; a ``Timeout``: its ``run``).
            silent: run without history or displayed results.
            resumable: let the run outlive this host: should this process die or
                close while the run waits on a tool call, the kernel keeps the calls
                this host never started waiting, for ``True``:
                ``DEFAULT_RESUME_GRACE`` (600) seconds or the number given, for the
                next host that attaches with those tools (it ``follow``s or ``join``s
                the run). Leaving this stream early still interrupts the run.

        Yields:
            Output and tool-call events, then ``ExecutionFinished``.
        """
        self.refuse_reentry()
        limit = run_seconds(timeout, self.timeout.run)
        grace = _grace(resumable)
        if not tracing.ENABLED:
            async with contextlib.aclosing(
                self._stream(code, tools, limit, silent, grace, None)
            ) as run:
                async for event in run:
                    yield event
            return
        span = tracing.start_run(
            "execute_code", {"progtc_kernel.code": code} if self.trace_content else {}
        )
        traced = _Traced(span)
        try:
            async with contextlib.aclosing(
                self._stream(code, tools, limit, silent, grace, traced)
            ) as run:
                async for event in run:
                    if isinstance(event, ExecutionFinished):
                        traced.finished(event.result)
                    yield event
        except BaseException as exc:
            if traced.done:
                raise  # left after the result: the run ended as the result says
            left = isinstance(exc, (GeneratorExit, asyncio.CancelledError))
            traced.error_type = "cancelled" if left else type(exc).__qualname__
            traced.message = "the run was left early" if left else str(exc)
            raise
        finally:
            tracing.end_run(span, traced.msg_id, traced.error_type, traced.message)

    async def _stream(
        self,
        code: str,
        tools: ToolsLike,
        limit: float | None,
        silent: bool,
        grace: float | None,
        traced: _Traced | None,
    ) -> AsyncGenerator[Event, None]:
        async with self._lock:
            if self._lost_connection():
                await self._come_back()
            elif self._dead:
                if not self.lifecycle.owned:
                    raise KernelDiedError(
                        "the kernel given to ToolKernel died; restart it where it runs "
                        "(or call restart() if ToolKernel holds its manager)"
                    )
                await self._restart()
            elif self._gone is not None and self._gone.done() and await self.lifecycle.is_alive():
                # A kernel given came back, restarted where it runs: a fresh process,
                # to register with as after a restart of ours.
                self._watch_kernel()
                await self._while_alive(self.bridge.reopen(timeout=self.timeout.start, fresh=True))
            bridge = self.bridge
            bridge.use_tools(self.tools if tools is None else tools)
            bridge.approvals.timeout = self.timeout.approval
            msg_id = bridge.transport.send(
                "shell",
                "execute_request",
                {
                    "code": code,
                    "silent": silent,
                    "store_history": not silent,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                metadata=_metadata(grace, traced),
            )
            if traced is not None:
                traced.sent(msg_id)
            run = self._runs[msg_id] = _Run(msg_id, resumable=grace is not None)
            finisher = asyncio.create_task(self._finish(run, limit))
            try:
                while True:
                    event = await run.events.get()
                    yield event
                    if isinstance(event, ExecutionFinished):
                        break
            finally:
                if not finisher.done() and run.detached:
                    finisher.cancel()  # closed: the run goes on, held for another host
                elif not finisher.done():
                    run.leave()
                    bridge.calls.cancel_approvals(msg_id, "cancelled")
                    await self._interrupt_quietly()
                with contextlib.suppress(asyncio.CancelledError):
                    await finisher
                self._runs.pop(msg_id, None)

    async def _finish(self, run: _Run, timeout: float | None) -> None:
        """Wait for the run to end, by itself or by timeout or death; emit the result."""
        outcome = await self._wait(run, timeout)
        if run.detached:
            # This host closed (which also ends the wait): the run goes on in the
            # kernel, held for the next host. Nothing to interrupt, no call to cancel.
            return
        if outcome == "timeout":
            run.timed_out = True
            self.bridge.calls.cancel_approvals(run.run_id, "timeout")
            if await self._interrupt_quietly():
                outcome = await self._wait(run, INTERRUPT_GRACE)
                if outcome == "timeout":
                    outcome = "stuck"
            else:
                outcome = "died"
        elif outcome == "cancelled":
            outcome = await self._wait(run, INTERRUPT_GRACE, leaving=False)
            if outcome == "timeout":  # it ends as it is, as a run left early does
                outcome = "cancelled"
        if outcome in ("died", "stuck"):
            self._dead = True
            self.bridge.cancel_calls()  # the code waiting for them is gone
        run.finish(outcome)

    async def _wait(self, run: _Run, timeout: float | None, *, leaving: bool = True) -> str:
        """How the run ends, woken by the first of: its end ("done"), the caller
        leaving it ("cancelled"; with ``leaving``, before any timeout), the kernel's
        end ("died"), ``timeout``."""
        watched: set[asyncio.Future[Any]] = {run.done}
        leaving = leaving and not run.timed_out
        if leaving:
            watched.add(run.left)
        if self._gone is not None:
            watched.add(self._gone)
        await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if run.done.done():
            return "done"
        if leaving and run.left.done():
            return "cancelled"
        if self._gone is not None and self._gone.done():
            return "died"
        return "timeout"

    async def _interrupt_quietly(self) -> bool:
        """Interrupt on the host's own account (a timeout, a run left early); False
        when the kernel cannot be reached to be interrupted (its server is gone)."""
        try:
            await self.lifecycle.interrupt()
        except KernelError as exc:
            log.warning("progtc_kernel: could not interrupt the kernel: %s", exc)
            return False
        return True

    def refuse_reentry(self) -> None:
        """A tool of this kernel may not run code on it: that code would wait for the
        cell that is waiting for the tool, forever."""
        if self._bridge is not None and serving.get() is self._bridge:
            raise ReentrantExecutionError(
                "a tool tried to run code on the kernel that is calling it; that kernel is "
                "busy running the code waiting for this tool, so both would wait forever. "
                "Run that code in a second ToolKernel, or return data for the calling "
                "code to use"
            )

    def _on_message(self, channel: str, msg: dict[str, Any]) -> None:
        run = self._run_of(msg["parent_header"].get("msg_id", ""))
        if run is not None:
            run.handle(channel, msg)

    def _on_tool_event(self, parent_id: str | None, event: Event) -> None:
        run = self._run_of(parent_id or "")
        if run is None and len(self._runs) == 1:
            run = next(iter(self._runs.values()))  # a call made from a thread or callback
        if run is not None:
            run.on_tool_event(event)

    # -- resumable runs: taking over a run whose host went ------------------------------

    @property
    def held_runs(self) -> list[str]:
        """The resumable runs this host took over as it attached (their host went
        while they waited), not yet followed to their end: ``follow`` or ``join``
        each."""
        bridge = self._bridge
        runs = bridge.held_runs if bridge is not None else []
        return [run for run in runs if run not in self._ended_held]

    def _run_of(self, run_id: str) -> _Run | None:
        """The run a message belongs to; a held run's collector is made at its first
        message (its calls come as soon as the kernel has confirmed this host)."""
        run = self._runs.get(run_id)
        if run is None and run_id and run_id in self.held_runs:
            run = self._runs[run_id] = _Run(run_id, followed=True)
        return run

    async def follow(self, run_id: str) -> AsyncGenerator[Event, None]:
        """The events of a held run (see ``held_runs``) from the time this host
        attached: its output and this host's tool calls, then ``ExecutionFinished``.

        The run's ``execute_reply`` went to the host that started it, so its end is
        read from iopub (the kernel going idle for it); output published while no
        host was attached is not replayed. It has no run timeout here: wrap it in
        ``asyncio.timeout`` to stop waiting (the run goes on).

        Args:
            run_id: a run id from ``held_runs``.

        Yields:
            Output and tool-call events, then ``ExecutionFinished``.

        Raises:
            ValueError: ``run_id`` is not a held run of this host.
        """
        run = self._run_of(run_id)
        if run is None or not run.followed:
            raise ValueError(
                f"{run_id!r} is not a held run of this kernel; held runs: {self.held_runs}"
            )
        finisher = asyncio.ensure_future(self._finish_followed(run))
        try:
            while True:
                event = await run.events.get()
                yield event
                if isinstance(event, ExecutionFinished):
                    break
        finally:
            finisher.cancel()
            if run.done.done() or finisher.done():
                self._ended_held.add(run_id)
                self._runs.pop(run_id, None)

    async def join(self, run_id: str) -> ExecutionResult:
        """Wait for a held run (see ``held_runs``) to end; returns its result.

        Args:
            run_id: a run id from ``held_runs``.

        Returns:
            Its result: output since this host attached, the tool calls this host
            served, and its error, if any.
        """
        result: ExecutionResult | None = None
        async for event in self.follow(run_id):
            if isinstance(event, ExecutionFinished):
                result = event.result
        assert result is not None
        return result

    async def _finish_followed(self, run: _Run) -> None:
        """A followed run ends by itself or with the kernel: no timeout of ours."""
        if not run.finished:
            run.finish(await self._wait(run, None, leaving=False))

    def _detach_resumable_runs(self) -> None:
        """This host closes: each resumable run it streams ends here (its stream ends),
        and goes on in the kernel, held for the next host."""
        for run in list(self._runs.values()):
            if run.resumable and not run.finished:
                run.detached = True
                run.finish("detached")


def _grace(resumable: bool | float) -> float | None:
    """Seconds a resumable run waits for a host (None: not resumable)."""
    if resumable is False:
        return None
    if resumable is True:
        return DEFAULT_RESUME_GRACE
    if isinstance(resumable, (int, float)) and resumable > 0 and math.isfinite(resumable):
        return float(resumable)
    raise ValueError(
        f"resumable must be True, False or a positive number of seconds, not {resumable!r}"
    )


class _Traced:
    """A run's span, what its ``execute_request`` carried, and how it ended."""

    def __init__(self, span: Any) -> None:
        self.span = span
        self.traceparent = tracing.traceparent(span)
        self.msg_id: str | None = None
        self.error_type: str | None = None  # how the run failed, if it did
        self.message = ""
        self.done = False

    def finished(self, result: ExecutionResult) -> None:
        self.done = True
        if result.error is not None:
            self.error_type = result.error.ename
            self.message = result.error.evalue

    def metadata(self) -> dict[str, Any] | None:
        return None if self.traceparent is None else {tracing.TRACEPARENT: self.traceparent}

    def sent(self, msg_id: str) -> None:
        self.msg_id = msg_id
        tracing.run_sent(self.span, msg_id, self.traceparent)


class _Run:
    """Collects one execution's messages into events and a result."""

    def __init__(self, run_id: str, *, resumable: bool = False, followed: bool = False) -> None:
        self.run_id = run_id
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.started = time.perf_counter()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.outputs: list[Output] = []
        self.tool_calls: list[ToolCallRecord] = []
        self.error: RunError | None = None
        self.execution_count: int | None = None
        self.idle = False
        self.replied = False
        self.timed_out = False
        self.interrupted_by_host = False
        self.left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.output_dropped = False
        self.resumable = resumable
        # A held run taken over: its execute_reply went to the host that started it.
        self.followed = followed
        self.detached = False  # its host closed; it goes on in the kernel
        self.finished = False

    def leave(self) -> None:
        """The caller left the run early: the host interrupts it."""
        self.interrupted_by_host = True
        if not self.left.done():
            self.left.set_result(None)

    def handle(self, channel: str, msg: dict[str, Any]) -> None:
        msg_type = msg["header"]["msg_type"]
        content = msg["content"]
        if msg_type == "stream":
            self.output_dropped |= rate_limit_window(channel, msg) is not None
            stderr = content.get("name") == "stderr"
            (self.stderr if stderr else self.stdout).append(content["text"])
            self.events.put_nowait(StreamOutput("stderr" if stderr else "stdout", content["text"]))
        elif msg_type in ("display_data", "execute_result"):
            output = Output(
                kind=msg_type,
                data=content.get("data", {}),
                metadata=content.get("metadata", {}),
                display_id=content.get("transient", {}).get("display_id"),
            )
            self.outputs.append(output)
            self.events.put_nowait(DisplayOutput(output))
        elif msg_type == "update_display_data":
            self._update_display(content)
        elif msg_type == "clear_output":
            self.outputs.clear()
        elif msg_type == "error":
            self.error = _run_error(content)
        elif msg_type == "status" and content.get("execution_state") == "idle":
            self.idle = True
        elif msg_type == "execute_reply":
            self.replied = True
            self.execution_count = content.get("execution_count")
            if content.get("status") == "error" and self.error is None:
                self.error = _run_error(content)
        elif msg_type == "execute_input" and self.followed:
            self.execution_count = content.get("execution_count")
        if self.idle and (self.replied or self.followed) and not self.done.done():
            self.done.set_result(None)

    def _update_display(self, content: dict[str, Any]) -> None:
        display_id = content.get("transient", {}).get("display_id")
        for index, output in enumerate(self.outputs):
            if display_id and output.display_id == display_id:
                self.outputs[index] = output.model_copy(
                    update={
                        "data": content.get("data", {}),
                        "metadata": content.get("metadata", {}),
                    }
                )

    def on_tool_event(self, event: Event) -> None:
        if isinstance(event, ToolCallFinished):
            self.tool_calls.append(event.call)
        if isinstance(
            event,
            (
                ToolCallStarted,
                ToolCallFinished,
                ApprovalRequested,
                ApprovalDecided,
                ApprovalCancelled,
            ),
        ):
            self.events.put_nowait(event)

    def finish(self, outcome: str) -> None:
        if self.finished:
            return
        self.finished = True
        error = self.error
        if outcome == "detached":
            error = RunError(
                kind="cancelled",
                ename="HostClosedError",
                evalue=(
                    "this host closed while the run went on; it is held in the kernel "
                    "for the next host (follow or join it there)"
                ),
                traceback="",
            )
        elif outcome in ("died", "stuck"):
            what = (
                "the kernel died while running this code"
                if outcome == "died"
                else "the kernel did not stop after an interrupt and will be restarted"
            )
            error = RunError(
                kind="kernel_died" if outcome == "died" else "timeout",
                ename="KernelDiedError" if outcome == "died" else "TimeoutError",
                evalue=what,
                traceback="",
            )
        elif self.timed_out:
            error = RunError(
                kind="timeout",
                ename="TimeoutError",
                evalue="the execution exceeded its timeout and was interrupted",
                traceback=error.traceback if error else "",
            )
        elif error is not None and self.interrupted_by_host and error.ename in _INTERRUPTS:
            error = error.model_copy(update={"kind": "cancelled"})
        result = ExecutionResult(
            ok=error is None,
            stdout="".join(self.stdout),
            stderr="".join(self.stderr),
            outputs=list(self.outputs),
            error=error,
            tool_calls=list(self.tool_calls),
            duration=time.perf_counter() - self.started,
            execution_count=self.execution_count,
            output_dropped=self.output_dropped,
            run_id=self.run_id,
        )
        self.events.put_nowait(ExecutionFinished(result))


def _metadata(grace: float | None, traced: _Traced | None) -> dict[str, Any] | None:
    """The execute_request's metadata: the hold of a resumable run, the trace."""
    metadata: dict[str, Any] = {}
    if grace is not None:
        metadata[HOLD_METADATA] = {"grace": grace}
    if traced is not None:
        metadata.update(traced.metadata() or {})
    return metadata or None


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _run_error(content: dict[str, Any]) -> RunError:
    ename = str(content.get("ename", "Error"))
    kind: ErrorKind
    if ename in _SYNTAX_ERRORS:
        kind = "syntax"
    elif ename in _INTERRUPTS:
        kind = "cancelled"
    else:
        kind = "runtime"
    return RunError(
        kind=kind,
        ename=ename,
        evalue=str(content.get("evalue", "")),
        traceback=clean_traceback(content.get("traceback", [])),
    )


def clean_traceback(frames: list[str]) -> str:
    """IPython's traceback as plain text, without this package's own frames."""
    kept = [_ANSI.sub("", frame) for frame in frames]
    kept = [frame for frame in kept if _PACKAGE_DIR not in frame and _INJECTED_FILES not in frame]
    return "\n".join(kept).strip("\n")
