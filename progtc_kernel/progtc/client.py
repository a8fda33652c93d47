"""``AsyncProgtcClient``: progtc's client, running the code on Jupyter kernels.

It talks to a Jupyter Server (``progtc-kernel serve``, or any Jupyter Server whose
kernels have progtc-kernel, such as an E2B sandbox's) through its REST API and kernel
websocket, and serves the handlers as tools to the code while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..exceptions import ServerError, ServerNotReadyError
from ..host import tracing
from ..host.events import ExecutionFinished, StreamOutput, ToolCallFinished, ToolCallStarted
from ..host.results import ExecutionResult
from ..host.tool_kernel import ToolKernel
from ..kernels.jupyter_server import JupyterServer, RemoteKernel
from ..timeouts import (
    DEFAULT_REQUEST,
    DEFAULT_RUN,
    DEFAULT_TOOL_CALL,
    USE_DEFAULT,
    Timeout,
    TimeoutLike,
    UseDefault,
    run_seconds,
    seconds,
)
from .types import (
    DeterminismMode,
    ErrorCode,
    ExecuteCodeError,
    ExecuteCodeResult,
    ExecuteCodeStepMessage,
    ExecuteCodeSuccess,
    step_message,
)

if TYPE_CHECKING:
    from ..approval import Approver, RequiresApproval

LEASES = "progtc-kernel/api"
# How long the server may hold one lease request (or ask about it) before it answers
# "still waiting": well within any client's timeout.
LEASE_ASK_WAIT = 2.0
# progtc's: how long ping() waits for an answer.
PING_TIMEOUT = 5.0
# progtc 0.2's: how long one execute_code_step request may take.
DEFAULT_STEP_REQUEST = 30.0

# The fix a refused key names: this client's own argument, not JupyterServer's.
KEY_OPTION = (
    "AsyncProgtcClient(base_url, api_key=...) with the key the server was started "
    "with (progtc-kernel serve --api-key, or a Jupyter Server's token)"
)

ToolEventCallback = Callable[[ToolCallStarted | ToolCallFinished], Any]
TextCallback = Callable[[str], Any]


class AsyncProgtcClient:
    """Runs code on a server's kernels, serving it your tools::

        client = AsyncProgtcClient(base_url="http://127.0.0.1:8000", api_key="KEY")
        result = await client.execute_code(code, tool_call_handlers={"get_weather": f})

    Each ``execute_code`` runs in a fresh kernel unless it names a ``session``. A
    ``JupyterServer`` given instead of a URL brings its own settings along
    (``validate_cert``, ``start_timeout``, headers; ``JupyterServer.e2b(sandbox)``)::

        client = AsyncProgtcClient(JupyterServer.e2b(sandbox))

    Args:
        base_url: The server (``progtc-kernel serve``, or any Jupyter Server: its
            kernels need only ipykernel), as a URL or a ``JupyterServer``.
        api_key: Its key (a Jupyter Server's token); a ``JupyterServer`` has its own.
        headers: Sent with every request (an E2B traffic token, say).
        kernel_name: The kernelspec to start on a plain Jupyter Server (default: its
            default); ``progtc-kernel serve`` hands out warm kernels of its own.
        request_timeout: Seconds one REST request may take (a ``JupyterServer``
            given has its own).
        approve: Decides whether a call that needs approval may run (an ``Approver``:
            ``ApprovalRequest -> Approval``, may be async); each ``execute_code`` may
            give its own.
        requires_approval: Which calls need approval: ``True`` (all), tool names, or a
            predicate ``(tool, arguments) -> bool``; each ``execute_code`` may give its own.

    Raises:
        TypeError: ``api_key`` given with a ``JupyterServer`` (it has its token).
    """

    def __init__(
        self,
        base_url: str | JupyterServer,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        kernel_name: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST,
        approve: Approver | None = None,
        requires_approval: RequiresApproval = None,
    ) -> None:
        self.request_timeout = seconds("request_timeout", request_timeout)
        self.approve = approve
        self.requires_approval = requires_approval
        if isinstance(base_url, JupyterServer):
            if api_key is not None:
                raise TypeError(
                    "the JupyterServer given has its own token: give it there, "
                    "JupyterServer(url, token=...), not as api_key="
                )
            self.server = base_url
        else:
            self.server = JupyterServer(
                base_url,
                token=api_key or "",
                request_timeout=self.request_timeout,
                token_option=KEY_OPTION,
            )
        self.base_url = base_url if isinstance(base_url, str) else self.server.url
        self.api_key = self.server.token or ""
        self.headers = dict(headers or {})
        self.kernel_name = kernel_name
        self._pooled: bool | None = None  # does the server lease warm kernels? (asked once)
        self._plain_sessions: dict[str, str] = {}  # on a plain server: session -> kernel id

    async def __aenter__(self) -> AsyncProgtcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _server(self, headers: Mapping[str, str] | None = None) -> JupyterServer:
        """The server, with this client's and this call's headers."""
        server = copy.copy(self.server)
        server.headers = {**self.server.headers, **self.headers, **(headers or {})}
        return server

    # -- the server -------------------------------------------------------------------

    async def ping(self, timeout: float | None = PING_TIMEOUT) -> bool:
        """Whether the server answers (its key is not needed).

        Args:
            timeout: Seconds to wait for the answer (``None``: no limit).

        Returns:
            True when it answered.
        """
        seconds("timeout", timeout)
        try:
            await self._server().request("GET", "api", timeout=timeout)
        except ServerError:
            return False
        return True

    async def wait_for_server(self, timeout: float | None = DEFAULT_REQUEST) -> None:
        """Return once the server answers.

        Args:
            timeout: Seconds to wait (``None``: for ever).

        Raises:
            ServerNotReadyError: Nothing answered within ``timeout`` (a
                ``TimeoutError``, as progtc's client raised).
        """
        seconds("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.05
        while not await self.ping(timeout=min(PING_TIMEOUT, timeout or PING_TIMEOUT)):
            if deadline is not None and time.monotonic() >= deadline:
                raise ServerNotReadyError(
                    f"Progtc server not ready after {timeout}s: nothing answers at {self.base_url}"
                )
            await asyncio.sleep(pause)  # polling a server that is not there yet
            pause = min(pause * 2, 0.5)

    async def close_session(self, session: str) -> None:
        """End a persistent session: its kernel and everything in it are gone.

        Args:
            session: The name given as ``execute_code(..., session=...)``.
        """
        server = self._server()
        if kernel_id := self._plain_sessions.pop(session, None):
            await server.request("DELETE", f"api/kernels/{kernel_id}")
        elif self._pooled is not False:
            try:
                await server.request("DELETE", f"{LEASES}/sessions/{session}")
            except ServerError as exc:
                if exc.status != 404:
                    raise

    async def close(self) -> None:
        """End the sessions this client started on a plain Jupyter Server."""
        for session in list(self._plain_sessions):
            with contextlib.suppress(ServerError):
                await self.close_session(session)

    async def aclose(self) -> None:
        """``close()``, by progtc's name for it."""
        await self.close()

    # -- running code -----------------------------------------------------------------

    async def execute_code(
        self,
        code: str,
        tool_call_handlers: Mapping[str, Callable[..., Any]] | None = None,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        modules: Mapping[str, str] | None = None,
        timeout: TimeoutLike = USE_DEFAULT,
        tool_call_timeout: float | UseDefault | None = USE_DEFAULT,
        code_execution_timeout: float | UseDefault | None = USE_DEFAULT,
        session: str | None = None,
        headers: Mapping[str, str] | None = None,
        on_stdout: TextCallback | None = None,
        on_stderr: TextCallback | None = None,
        on_tool_call: ToolEventCallback | None = None,
        approve: Approver | UseDefault | None = USE_DEFAULT,
        requires_approval: RequiresApproval | UseDefault = USE_DEFAULT,
    ) -> ExecuteCodeResult:
        """Run ``code`` on a fresh kernel (or a session's); its ``from tools import name``
        calls your handlers.

        Example:
            ```python
            result = await client.execute_code(code, tool_call_handlers={"get_weather": f})
            ```

        Args:
            code: The code to run.
            tool_call_handlers: ``{name: callable}``, sync or async. Arguments are checked
                against their signatures; a handler that raises becomes a ``ToolError`` the
                code can catch.
            tools: progtc 0.2's name for ``tool_call_handlers``.
            modules: ``{name: source}`` helper modules the code (and each other) can import.
            timeout: Seconds the run may take, never above the server's ceiling; ``None``:
                no limit of the client's own (the ceiling governs); by default the ceiling
                (progtc's 30 s where the server sets none). A ``Timeout`` also sets
                ``tool_call_timeout``.
            tool_call_timeout: Seconds one tool call may take, never above the server's
                ceiling (default: the ceiling, or progtc's 10 s).
            code_execution_timeout: progtc's name for ``timeout``, in seconds.
            session: Run in the kernel of that name, keeping its state across calls
                (``close_session`` ends it); by default each call gets a fresh kernel.
            headers: Extra headers for this call.
            on_stdout: Called with output as it comes; may be async.
            on_stderr: Called with error output as it comes; may be async.
            on_tool_call: Called with ``ToolCallStarted`` and ``ToolCallFinished`` events;
                may be async.
            approve: This run's approver, instead of the client's (``None``: none).
            requires_approval: Which of this run's calls need approval, instead of the
                client's. A denied call raises ``ToolDeniedError`` in the code; uncaught,
                the result is ``CODE_RUNTIME_ERROR`` with its message.

        Returns:
            progtc's result: ``MessageType.SUCCESS`` with ``stdout`` and ``stderr``, or
            ``MessageType.ERROR`` with an ``ErrorCode``.
        """
        run, tool_call = _asked(timeout, code_execution_timeout, tool_call_timeout)
        if tool_call_handlers is not None and tools is not None:
            raise TypeError("give the handlers once: tool_call_handlers= or tools=")
        handlers = dict(tool_call_handlers if tool_call_handlers is not None else tools or {})
        kernel_options = self._approval(approve, requires_approval)
        callbacks = _Callbacks(on_stdout, on_stderr, on_tool_call)
        if not tracing.ENABLED:
            return await self._execute(
                code, handlers, modules, run, tool_call, session, headers, callbacks, kernel_options
            )
        with tracing.current_span("progtc.execute_code"):
            return await self._execute(
                code, handlers, modules, run, tool_call, session, headers, callbacks, kernel_options
            )

    async def _execute(
        self,
        code: str,
        handlers: dict[str, Callable[..., Any]],
        modules: Mapping[str, str] | None,
        run: float | UseDefault | None,
        tool_call: float | UseDefault | None,
        session: str | None,
        headers: Mapping[str, str] | None,
        callbacks: _Callbacks,
        approval: dict[str, Any],
    ) -> ExecuteCodeResult:
        server = self._server(headers)
        lease = await self._kernel_for(server, session)
        kernel = ToolKernel(
            handlers,
            kernel=RemoteKernel(server, lease.kernel_id),
            extension="loaded" if lease.extension_loaded else "inject",
            timeout=Timeout(
                _within(run, lease.limits.get("code_execution_timeout"), DEFAULT_RUN),
                tool_call=_within(
                    tool_call, lease.limits.get("tool_call_timeout"), DEFAULT_TOOL_CALL
                ),
            ),
            **approval,
        )
        try:
            await kernel.start()
            if modules:
                await kernel.install_modules(modules)
            result = await self._run(kernel, code, *callbacks)
        finally:
            # Before returning, not in a task of its own: a script's loop may end right
            # after, and a task left behind dies with it, leaving the kernel running.
            await self._end(kernel, server, lease, session)
        return to_progtc(result)

    def _approval(
        self,
        approve: Approver | UseDefault | None,
        requires_approval: RequiresApproval | UseDefault,
    ) -> dict[str, Any]:
        """The kernel's ``approve=`` and ``requires_approval=``: this call's, else the
        client's. A call that needs approval and has no approver would wait for a
        decision nobody can give: refused at once."""
        approver = self.approve if isinstance(approve, UseDefault) else approve
        policy = (
            self.requires_approval
            if isinstance(requires_approval, UseDefault)
            else requires_approval
        )
        if approver is None and policy:
            raise TypeError(
                "requires_approval= says which calls need approval, and no approve= "
                "decides: give approve= (an ApprovalRequest -> Approval callable)"
            )
        if approver is None:
            return {}
        return {"approve": approver, "requires_approval": policy}

    async def execute_code_step(
        self,
        code: str,
        tool_names: list[str],
        state: str | None = None,
        tool_results: list[Any] | None = None,
        timeout: float | None = DEFAULT_STEP_REQUEST,
        headers: Mapping[str, str] | None = None,
        determinism: DeterminismMode | str = DeterminismMode.STRICT,
        modules: Mapping[str, str] | None = None,
    ) -> ExecuteCodeStepMessage:
        """One step of a run, progtc 0.2's way: the code runs until it has made every
        tool call it can make without a result, and the step returns those calls and a
        state; you run the calls (whenever, in whatever process) and send the next step
        with the same code, that state and their results, in the calls' order. Needs
        ``progtc-kernel serve`` (or progtc's own server).

        On ``progtc-kernel serve`` the run stays live in its kernel between steps (its
        code waits on the calls; nothing runs twice) for the server's ``--step-keep``
        seconds; after that, or after a restart, a step replays the code from the start
        as progtc's server does.

        Example:
            ```python
            step = await client.execute_code_step(code, tool_names=["get_weather"])
            while step.type == "tool_call":
                results = [await run(call) for call in step.tool_calls]
                step = await client.execute_code_step(
                    code, tool_names=["get_weather"], state=step.state, tool_results=results
                )
            print(step.stdout)
            ```

        Args:
            code: The code (the same at every step of a run).
            tool_names: The tools it may import from ``tools``.
            state: The last step's ``state`` (``None``: the first step).
            tool_results: The results of the last step's ``tool_calls``, in their order.
            timeout: Seconds the request may take (``None``: no limit).
            headers: Extra headers for this call.
            determinism: How a replay checks replayed calls (``"strict"``: same tool
                and arguments; ``"order_only"``: same tool). The first step's holds.
            modules: ``{name: source}`` helper modules the code can import.

        Returns:
            ``ExecuteCodeStepToolCalls`` (``type == "tool_call"``: run them), or
            ``ExecuteCodeStepEnd`` (``"success"``, ``"syntax_error"``, ``"runtime_error"``,
            ``"timeout_error"`` or ``"determinism_error"``, with ``stdout``, ``stderr``).

        Raises:
            ServerError: The server refused the step (the message says why: a wrong
                number of results, a state of another client's run...).
        """
        seconds("timeout", timeout)
        body = {
            "tool_names": list(tool_names),
            "code": code,
            "state": state,
            "tool_results": tool_results,
            "determinism": DeterminismMode(determinism).value,
            "modules": dict(modules or {}),
        }
        answer = await self._server(headers).request(
            "POST", "execute-code-step", body, timeout=timeout
        )
        return step_message(answer)

    async def _end(
        self, kernel: ToolKernel, server: JupyterServer, lease: _Lease, session: str | None
    ) -> None:
        """Disconnect from the kernel, and end its lease unless it is a session's."""
        await kernel.close()
        if session is None:
            await self._release(server, lease)

    async def _run(
        self,
        kernel: ToolKernel,
        code: str,
        on_stdout: TextCallback | None,
        on_stderr: TextCallback | None,
        on_tool_call: ToolEventCallback | None,
    ) -> ExecutionResult:
        events = kernel.stream(code)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, ExecutionFinished):
                    return event.result
                callback: Any = None
                argument: Any = event
                if isinstance(event, StreamOutput):
                    callback = on_stdout if event.name == "stdout" else on_stderr
                    argument = event.text
                elif isinstance(event, ToolCallStarted | ToolCallFinished):
                    callback = on_tool_call
                if callback is not None and asyncio.iscoroutine(value := callback(argument)):
                    await value
        raise AssertionError("a run's events end with ExecutionFinished")

    async def _kernel_for(self, server: JupyterServer, session: str | None) -> _Lease:
        """A kernel for one execution: leased from the pool, or started on a plain
        Jupyter Server (or the session's, either way)."""
        if self._pooled is not False:
            try:
                lease = await _lease_from_pool(server, session)
            except ServerError as exc:
                if exc.status != 404:
                    raise
                self._pooled = False  # a plain Jupyter Server
            else:
                self._pooled = True
                return _Lease(
                    lease["id"],
                    dict(lease["limits"]),
                    pooled=True,
                    extension_loaded=bool(lease.get("extension_loaded")),
                )
        if session is not None and session in self._plain_sessions:
            return _Lease(self._plain_sessions[session])
        body = {"name": self.kernel_name} if self.kernel_name else {}
        model = await server.request("POST", "api/kernels", body, timeout=server.start_timeout)
        if session is not None:
            self._plain_sessions[session] = model["id"]
        return _Lease(model["id"])

    async def _release(self, server: JupyterServer, lease: _Lease) -> None:
        path = (
            f"{LEASES}/kernels/{lease.kernel_id}"
            if lease.pooled
            else f"api/kernels/{lease.kernel_id}"
        )
        with contextlib.suppress(ServerError):  # already reaped: a dead kernel, say
            await server.request("DELETE", path)


async def _lease_from_pool(server: JupyterServer, session: str | None) -> dict[str, Any]:
    """A kernel leased from ``progtc-kernel serve``'s pool. The server may make the
    request wait for one to come free, longer than this client's timeout: asked to
    answer within ``LEASE_ASK_WAIT`` seconds, it says "still waiting" (202) instead,
    and is asked again, keeping the request's place (an older server answers once)."""
    timeout = server.start_timeout
    wait = LEASE_ASK_WAIT if timeout is None else min(LEASE_ASK_WAIT, timeout / 2)
    asking = copy.copy(server)
    asking.headers = {**server.headers, "Prefer": f"respond-async, wait={wait:g}"}
    given_up = asyncio.Event()
    # An ask cancelled midway would leave the server waiting for a kernel for nobody:
    # the asks go on to their answer, and then give the request (or the kernel) back.
    leasing = asyncio.ensure_future(_ask_until_leased(asking, session, timeout, given_up))
    try:
        return await asyncio.shield(leasing)
    except asyncio.CancelledError:
        given_up.set()
        leasing.add_done_callback(lambda done: done.cancelled() or done.exception())
        raise


async def _ask_until_leased(
    server: JupyterServer, session: str | None, timeout: float | None, given_up: asyncio.Event
) -> dict[str, Any]:
    answer = await server.request(
        "POST", f"{LEASES}/kernels", {"session": session}, timeout=timeout
    )
    while "pending" in answer:
        pending = f"{LEASES}/lease-requests/{answer['pending']}"
        if given_up.is_set():
            await server.request("DELETE", pending)
            return {}
        answer = await server.request("GET", pending, timeout=timeout)
    if given_up.is_set() and session is None:
        await server.request("DELETE", f"{LEASES}/kernels/{answer['id']}")
    return dict(answer)


class _Callbacks(NamedTuple):
    """``execute_code``'s output and tool-call callbacks."""

    on_stdout: TextCallback | None
    on_stderr: TextCallback | None
    on_tool_call: ToolEventCallback | None


@dataclass
class _Lease:
    """The kernel an execution runs on. ``limits``: the server's ceilings (none from a
    plain Jupyter Server). ``pooled``: leased from ``progtc-kernel serve``'s pool."""

    kernel_id: str
    limits: dict[str, Any] = field(default_factory=dict)
    pooled: bool = False
    extension_loaded: bool = False


def _asked(
    timeout: TimeoutLike,
    code_execution_timeout: float | UseDefault | None,
    tool_call_timeout: float | UseDefault | None,
) -> tuple[float | UseDefault | None, float | UseDefault | None]:
    """The run and tool-call timeouts a caller asked for, however spelt."""
    if not isinstance(code_execution_timeout, UseDefault):
        if not isinstance(timeout, UseDefault):
            raise TypeError("give the run timeout once: timeout= or code_execution_timeout=")
        timeout = code_execution_timeout
    run = timeout if isinstance(timeout, UseDefault) else run_seconds(timeout, None)
    if isinstance(timeout, Timeout):
        if not isinstance(tool_call_timeout, UseDefault):
            raise TypeError("give the tool-call timeout once: in the Timeout or tool_call_timeout=")
        return run, timeout.tool_call
    if isinstance(tool_call_timeout, UseDefault):
        return run, tool_call_timeout
    return run, seconds("tool_call_timeout", tool_call_timeout)


def _within(
    asked: float | UseDefault | None, ceiling: float | None, default: float
) -> float | None:
    """The client's timeout, never above the server's ceiling; by default the ceiling
    (or progtc's default, where the server sets none); ``None``: the ceiling alone."""
    if isinstance(asked, UseDefault):
        return ceiling if ceiling is not None else default
    if asked is None or ceiling is None:
        return ceiling if asked is None else asked
    return min(asked, ceiling)


def to_progtc(result: ExecutionResult) -> ExecuteCodeResult:
    """An execution's result as progtc's success or error."""
    error = result.error
    if error is None:
        return ExecuteCodeSuccess(
            stdout=result.stdout,
            stderr=result.stderr,
            outputs=result.outputs,
            tool_calls=result.tool_calls,
            duration=result.duration,
        )
    code = {
        "syntax": ErrorCode.CODE_COMPILATION_ERROR,
        "timeout": ErrorCode.CODE_TIMEOUT_ERROR,
        "kernel_died": ErrorCode.KERNEL_DIED,
    }.get(error.kind, ErrorCode.CODE_RUNTIME_ERROR)
    stderr = result.stderr + (error.traceback + "\n" if error.traceback else "")
    return ExecuteCodeError(
        code=code,
        message=f"{error.ename}: {error.evalue}",
        traceback=error.traceback,
        stdout=result.stdout,
        stderr=stderr,
        outputs=result.outputs,
        tool_calls=result.tool_calls,
        duration=result.duration,
    )
