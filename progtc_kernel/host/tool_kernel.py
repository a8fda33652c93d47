"""ToolKernel: a kernel whose code can call your tools, known through a lifecycle and
a transport (``progtc_kernel.kernels``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..exceptions import (
    KernelDiedError,
    KernelError,
    KernelNotStartedError,
    KernelStartError,
    ReentrantExecutionError,
)
from ..kernels.base import KernelLifecycle, KernelLike, Reconnecting
from ..protocol import install_modules_code
from .bridge import ToolBridge, serving
from .events import (
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
        timeout: Seconds a run may take (``None``: no limit).
        tool_timeout: Seconds a tool call may take.
        max_in_flight: Tool calls outstanding at once.
        tool_threads: How many sync tools may run at once.
        startup_timeout: Seconds a starting kernel may take to answer.
        extension: How the kernel gets the extension (see ``ToolBridge``): by
            default it is loaded if the kernel has not, from the host's own code
            where the kernel lacks this version, so any kernel with ipykernel
            works; ``"installed"`` forbids bringing code, ``"loaded"`` sends nothing
            (a kernel from ``progtc-kernel serve``'s pool, or one whose profile
            loads it; saves a round trip).
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
        timeout: float | None = 30.0,
        tool_timeout: float | None = 10.0,
        max_in_flight: int = 256,
        tool_threads: int = DEFAULT_TOOL_THREADS,
        startup_timeout: float = 60.0,
        extension: ExtensionPolicy = "inject",
        **moved: NoReturn,
    ) -> None:
        from ..kernels.resolve import moved_options, resolve_kernel

        if moved:
            raise moved_options(type(self).__name__, kernel, moved)
        self.tools = ToolRegistry.of(tools)
        self.timeout = timeout
        self.tool_timeout = tool_timeout
        self.max_in_flight = max_in_flight
        self.tool_threads = tool_threads
        self.startup_timeout = startup_timeout
        self.extension = extension
        self.lifecycle: KernelLifecycle = resolve_kernel(kernel)
        self._bridge: ToolBridge | None = None
        self._runs: dict[str, _Run] = {}
        self._lock = asyncio.Lock()
        self._dead = False

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
            # A client of our own session: km.client() would share the manager's
            # session id, hence the ZMQ identity, with any other client made that way.
            bridge = ToolBridge(
                self.lifecycle.connect(),
                self.tools,
                tool_timeout=self.tool_timeout,
                max_in_flight=self.max_in_flight,
                tool_threads=self.tool_threads,
                extension=self.extension,
            )
            bridge.add_message_listener(self._on_message)
            bridge.add_tool_listener(self._on_tool_event)
            self._bridge = bridge
            await self._while_alive(
                bridge.start(timeout=self.startup_timeout, fresh=self.lifecycle.owned)
            )
        except BaseException:
            await self.close()
            raise

    async def _while_alive(self, starting: Any) -> Any:
        """Await a start or restart, failing at once if the kernel dies meanwhile."""
        task = asyncio.ensure_future(starting)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.1)
                if done:
                    return task.result()
                if not await self.lifecycle.is_alive():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                    raise KernelStartError(self.lifecycle.startup_failure())
        finally:
            task.cancel()

    async def close(self) -> None:
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
        self._dead = False
        await self._while_alive(self.bridge.reopen(timeout=self.startup_timeout, fresh=True))

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
        self._dead = False
        if survived:
            await self._while_alive(self.bridge.wait_ready(self.startup_timeout))
        else:
            await self._while_alive(self.bridge.reopen(timeout=self.startup_timeout, fresh=True))

    @runs_code
    async def reset(self) -> None:
        """Forget every variable and import of earlier executions (keeps the process)."""
        result = await self.execute("get_ipython().reset(new_session=False)", silent=True)
        result.raise_for_error()

    async def interrupt(self) -> None:
        await self.lifecycle.interrupt()

    @runs_code
    async def install_modules(self, modules: Mapping[str, str]) -> None:
        """Make helper modules importable by the code: ``{"helpers": "def f(): ..."}``.

        Each runs when first imported (it may ``from tools import ...``); a later call
        replaces them. Raises ``ValueError`` for a name that is not an identifier, is
        ``tools``, or shadows a module the kernel has."""
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
        timeout: float | EllipsisType | None = ...,
        silent: bool = False,
    ) -> ExecutionResult:
        """Run code; returns its output, error and tool calls. Never raises for the
        code's own errors: check ``result.ok`` or call ``result.raise_for_error()``."""
        result: ExecutionResult | None = None
        async for event in self.stream(code, tools=tools, timeout=timeout, silent=silent):
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
        timeout: float | EllipsisType | None = ...,
        silent: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """Run code, yielding output and tool-call events live; the last one is
        ``ExecutionFinished`` with the result. Leaving early interrupts the run: wrap
        it in ``contextlib.aclosing`` to have that happen at once.

        ``timeout`` (seconds, default: the kernel's) interrupts a run that takes
        longer; its output so far is kept. ``tools`` replaces the tool set for this
        run. ``silent`` runs without history or displayed results."""
        self.refuse_reentry()
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
            bridge = self.bridge
            bridge.use_tools(self.tools if tools is None else tools)
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
            )
            run = self._runs[msg_id] = _Run()
            limit = self.timeout if timeout is ... else timeout
            finisher = asyncio.create_task(self._finish(run, limit))
            try:
                while True:
                    event = await run.events.get()
                    yield event
                    if isinstance(event, ExecutionFinished):
                        break
            finally:
                if not finisher.done():
                    run.interrupted_by_host = True
                    await self._interrupt_quietly()
                await finisher
                self._runs.pop(msg_id, None)

    async def _finish(self, run: _Run, timeout: float | None) -> None:
        """Wait for the run to end, by itself or by timeout or death; emit the result."""
        outcome = await self._wait(run, timeout)
        if outcome == "timeout":
            run.timed_out = True
            if await self._interrupt_quietly():
                outcome = await self._wait(run, INTERRUPT_GRACE)
                if outcome == "timeout":
                    outcome = "stuck"
            else:
                outcome = "died"
        elif outcome == "cancelled":
            outcome = await self._wait(run, INTERRUPT_GRACE)
        if outcome in ("died", "stuck"):
            self._dead = True
            self.bridge.cancel_calls()  # the code waiting for them is gone
        run.finish(outcome)

    async def _wait(self, run: _Run, timeout: float | None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.25 if deadline is None else min(0.25, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.done), step)
            if run.done.done():
                return "done"
            if run.interrupted_by_host and not run.timed_out:
                return "cancelled"
            if not await self.lifecycle.is_alive():
                return "died"
            if deadline is not None and time.monotonic() >= deadline:
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
        run = self._runs.get(msg["parent_header"].get("msg_id", ""))
        if run is not None:
            run.handle(channel, msg)

    def _on_tool_event(self, parent_id: str | None, event: Event) -> None:
        run = self._runs.get(parent_id or "")
        if run is None and len(self._runs) == 1:
            run = next(iter(self._runs.values()))  # a call made from a thread or callback
        if run is not None:
            run.on_tool_event(event)


class _Run:
    """Collects one execution's messages into events and a result."""

    def __init__(self) -> None:
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
        self.output_dropped = False

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
        if self.idle and self.replied and not self.done.done():
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
        if isinstance(event, (ToolCallStarted, ToolCallFinished)):
            self.events.put_nowait(event)

    def finish(self, outcome: str) -> None:
        error = self.error
        if outcome in ("died", "stuck"):
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
        )
        self.events.put_nowait(ExecutionFinished(result))


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
