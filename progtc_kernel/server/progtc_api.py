"""progtc's own HTTP API, so that the ``progtc`` package's clients work unchanged.

    GET  /ping           200, empty (no key needed)
    POST /execute-code   {"code", "tool_names", "modules"?} -> a server-sent-events stream
    POST /tool-results   {"execution_id", "tool_call_id", "result"} -> null

The stream carries ``data: {"type": "tool_call", "id", "execution_id", "tool_name",
"args", "kwargs"}`` events, a ``: keep alive`` comment after 15 quiet seconds, then one
final message. The server is the host here: each tool call of the code becomes an
event, and the client's ``/tool-results`` post answers it.

The final message depends on the client's release, which the way it sends the key
tells, partly:

- ``X-Progtc-API-Key: KEY`` (progtc 0.1.6 to 0.2): ``{"type": "success" |
  "syntax_error" | "runtime_error" | "timeout_error", "stdout", "stderr"}``, errors
  with ``"code"`` and ``"message"`` too;
- ``Authorization: Bearer KEY``: progtc 0.1.1 (the seed's release) and 0.1.2 to 0.1.5
  send the same requests but expect different errors, so the server's ``dialect``
  decides: ``"0.1.1"`` (default) answers ``{"type": "error", "code":
  "code_compilation_error" | "code_runtime_error" | "code_timeout_error", "message",
  "stdout", "stderr"}``, ``"0.1.5"`` answers as for the newer clients.

Requests pass Jupyter Server's own checks first: its ``Host`` check (a forged host is
a 403), its ``Origin`` check (a cross-origin request is refused), and its
authentication, whatever the server uses (a token, a password, JupyterHub): the
progtc headers carry the server's token. Bodies must be ``application/json``.

Bounds (each refused with a 4xx that says it): a body of at most ``MAX_BODY_BYTES``
(413); at most ``MAX_TOOL_NAMES`` tool names, none starting with ``__`` (422). An
execution keeps at most ``max_output`` characters of output: one that prints more is
stopped, and its final message says so. A client that takes nothing the server sends
for ``send_timeout`` seconds is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from jupyter_server.auth import decorator as auth_decorator
from tornado import web
from tornado.iostream import StreamClosedError

from ..exceptions import PoolError, PoolExhausted, ToolDefinitionError
from ..host.events import DisplayOutput, ExecutionFinished, StreamOutput
from ..host.function_tool import FunctionTool
from ..host.results import ExecutionResult
from ..host.tool_kernel import ToolKernel
from ..host.tools import Tool, ToolRegistry
from ..protocol import problem_with_module_name
from ..timeouts import Timeout
from .handlers import AuthenticatedFirst
from .pool import Lease

_Method = TypeVar("_Method", bound=Callable[..., Any])
# jupyter_server >= 2.13 can refuse unauthenticated requests unless marked (older
# servers let them all through, and have no mark).
allow_unauthenticated: Callable[[_Method], _Method] = getattr(
    auth_decorator, "allow_unauthenticated", lambda method: method
)

log = logging.getLogger("progtc_kernel.server")

KEEPALIVE = 15.0  # seconds of silence before a keep-alive comment, as progtc sends
# A request that finds no warm kernel waits silently this long, then its stream starts
# and a keep-alive goes out every as many seconds until it has a kernel: a client's
# read timeout (httpx's default is 5 s) must not run out while it waits. Shorter waits
# keep their HTTP status (a 503 when the pool is exhausted, a 500 when kernels fail).
LEASE_KEEPALIVE = 2.0
ERROR_CODES = {
    "syntax_error": "code_compilation_error",
    "runtime_error": "code_runtime_error",
    "timeout_error": "code_timeout_error",
}
DIALECTS = ("0.1.1", "0.1.5")  # what a client sending 'Authorization: Bearer' gets
# Tool names one execution may offer. Building each costs the server a few
# milliseconds; a real client offers tens.
MAX_TOOL_NAMES = 256
MAX_NAME_LENGTH = 128
# A request body (code and modules, or one tool result): parsed on the event loop, so
# bounded. Larger data belongs in a file the code reads, not in the request.
MAX_BODY_BYTES = 16 * 2**20


class ExecuteCodeRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    code: str
    tool_names: list[str] = pydantic.Field(default=[], max_length=MAX_TOOL_NAMES)
    modules: dict[str, str] = {}

    @pydantic.field_validator("tool_names")
    @classmethod
    def _tool_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if len(name) > MAX_NAME_LENGTH:
                raise ValueError(
                    f"tool name {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters"
                )
            if name.startswith("__"):
                raise ValueError(
                    f"{name!r} cannot be a tool: names starting with '__' "
                    "belong to Python (give the tool a plain name)"
                )
        return names

    @pydantic.field_validator("modules")
    @classmethod
    def _module_names(cls, modules: dict[str, str]) -> dict[str, str]:
        for name in modules:
            if problem := problem_with_module_name(name):
                raise ValueError(problem)
        return modules


class ToolResultRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    execution_id: str
    tool_call_id: str
    result: pydantic.JsonValue


class Execution:
    """One ``/execute-code`` request's tool calls, each waiting for its result post."""

    def __init__(self, send: Any) -> None:
        self.id = uuid.uuid4().hex
        self.send = send
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.issued: set[str] = set()

    def tools(self, names: list[str]) -> ToolRegistry:
        """The tools, described as the kernel will see them. Slow for many names
        (pydantic builds a model for each): call it off the event loop."""
        registry = ToolRegistry.of({name: self._proxy(name) for name in names})
        registry.specs()  # computed (and cached) here rather than on the loop
        return registry

    def _proxy(self, name: str) -> Tool:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.call(name, list(args), kwargs)

        # The same tool for every execution but for its function: built once per name
        # (its pydantic model is most of the cost of a small execution's tools).
        return dataclasses.replace(_proxy_tool(name), function=call)

    async def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        call_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = future
        self.issued.add(call_id)
        try:
            await self.send(
                {
                    "type": "tool_call",
                    "id": call_id,
                    "execution_id": self.id,
                    "tool_name": name,
                    "args": args,
                    "kwargs": kwargs,
                }
            )
            return await future
        finally:
            self.waiting.pop(call_id, None)

    def answer(self, call_id: str, result: Any) -> bool:
        """Deliver a result; False for a call this execution never made."""
        future = self.waiting.get(call_id)
        if future is not None and not future.done():
            future.set_result(result)
        return call_id in self.issued

    def cancel(self) -> None:
        for future in self.waiting.values():
            future.cancel()


@functools.lru_cache(maxsize=1024)
def _proxy_tool(name: str) -> FunctionTool:
    async def call(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError  # replaced by each execution's own

    return FunctionTool.build(call, name=name, description=f"The client's {name!r}.")


class _ProgtcHandler(AuthenticatedFirst):
    """progtc's conventions (JSON bodies, ``{"detail": ...}`` errors, its two key
    headers) on top of Jupyter Server's checks: ``prepare`` refuses a forged ``Host``
    and a cross-origin request, and asks the server's identity provider who is
    calling, as for any of the server's own APIs."""

    @property
    def service(self) -> Any:
        return self.settings["progtc_kernel"]

    async def prepare(self) -> None:  # type: ignore[override]  # (as APIHandler's)
        self._key_as_token()
        await super().prepare()

    def _key_as_token(self) -> None:
        """progtc 0.1.6+ sends the key as ``X-Progtc-API-Key``; Jupyter Server reads a
        token from ``Authorization: token|Bearer KEY`` (where older progtc sends it)."""
        key = self.request.headers.get("X-Progtc-API-Key")
        if key is not None and "Authorization" not in self.request.headers:
            self.request.headers["Authorization"] = f"token {key}"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        detail = (
            exc.detail
            if isinstance(exc, _Detail)
            else exc.log_message
            if isinstance(exc, web.HTTPError) and exc.log_message
            else self._reason
        )
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"detail": detail}))

    def authenticate(self) -> None:
        """Who the server says is calling must be allowed to run code."""
        user = self.current_user
        if user is None:
            if "Authorization" not in self.request.headers:
                self.set_header("WWW-Authenticate", "Bearer")
                raise _Detail(
                    401,
                    "Not authenticated: send the API key (the server's "
                    "token) as 'X-Progtc-API-Key: KEY' (or 'Authorization: "
                    "Bearer KEY')",
                )
            raise _Detail(401, "Unauthorized: the API key is wrong (it is the server's token)")
        if not self.authorizer.is_authorized(self, user, "execute", "kernels"):
            raise _Detail(403, f"user {user.username!r} may not run code on this server")

    def body_as(self, model: type[pydantic.BaseModel]) -> Any:
        media_type = self.request.headers.get("Content-Type", "").partition(";")[0]
        if media_type.strip().lower() != "application/json":
            raise _Detail(
                415,
                "send the body as JSON, with 'Content-Type: "
                f"application/json' (this one was {media_type or 'untyped'!r})",
            )
        if len(self.request.body) > MAX_BODY_BYTES:
            raise _Detail(
                413,
                f"the body is {len(self.request.body):,} bytes; this server "
                f"takes at most {MAX_BODY_BYTES:,} (pass large data another way)",
            )
        try:
            return model.model_validate_json(self.request.body or b"")
        except pydantic.ValidationError as exc:
            raise _Detail(422, [_error_entry(e) for e in exc.errors()]) from None


class _Detail(web.HTTPError):
    """An error answered as progtc's ``{"detail": ...}``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(status, str(detail))
        self.detail = detail


def _error_entry(error: Any) -> dict[str, Any]:
    return {"type": error["type"], "loc": ["body", *error["loc"]], "msg": error["msg"]}


class PingHandler(_ProgtcHandler):
    @allow_unauthenticated
    def get(self) -> None:
        self.finish()


class ToolResultsHandler(_ProgtcHandler):
    def post(self) -> None:
        self.authenticate()
        posted = self.body_as(ToolResultRequest)
        execution = self.service.executions.get(posted.execution_id)
        if execution is None:
            if posted.execution_id in self.service.finished:
                self.finish("null")  # a handler that ended after its run: nothing to do
                return
            raise _Detail(404, f"no execution {posted.execution_id!r} on this server")
        if not execution.answer(posted.tool_call_id, posted.result):
            raise _Detail(
                404, f"execution {posted.execution_id!r} made no tool call {posted.tool_call_id!r}"
            )
        self.set_header("Content-Type", "application/json")
        self.finish("null")


class ExecuteCodeHandler(_ProgtcHandler):
    _run: asyncio.Task[dict[str, Any]] | None = None
    _taking: asyncio.Task[Lease] | None = None
    _gone = False
    _streaming = False  # its headers are sent: what follows are events

    async def post(self) -> None:
        self.authenticate()
        request: ExecuteCodeRequest = self.body_as(ExecuteCodeRequest)
        execution = Execution(self._send)
        try:  # many names take a while: build them off the event loop
            tools = await asyncio.to_thread(execution.tools, request.tool_names)
        except ToolDefinitionError as exc:
            raise _Detail(
                422, [{"type": "value_error", "loc": ["body", "tool_names"], "msg": str(exc)}]
            ) from None
        lease = await self._lease()
        if lease is None:
            return
        self.service.executions[execution.id] = execution
        try:
            if not self._gone:
                await self._stream(tools, request, lease.kernel_id)
        except asyncio.CancelledError:
            if not self._gone:
                raise
        finally:
            execution.cancel()
            self.service.end(execution.id)
            self._reap(lease.kernel_id)

    async def _lease(self) -> Lease | None:
        """A pool kernel for this execution, streaming keep-alives while it waits for
        one (``None``: the client left, or was told why there is none)."""
        taking: asyncio.Task[Lease] = asyncio.ensure_future(self.service.pool.take(websocket=False))
        self._taking = taking
        try:
            await asyncio.wait({taking}, timeout=LEASE_KEEPALIVE)
            while not taking.done():
                self._start_stream()
                self.service.lease_keepalives += 1
                await self._write(b": waiting for a kernel\n\n")
                await asyncio.wait({taking}, timeout=LEASE_KEEPALIVE)
            lease = taking.result()
        except asyncio.CancelledError:
            if taking.done() and not taking.cancelled() and taking.exception() is None:
                self._reap(taking.result().kernel_id)  # leased as this handler was stopped
            if not self._gone:
                raise
            return None  # the client left while it waited
        except PoolError as exc:
            status = 503 if isinstance(exc, PoolExhausted) else 500
            if not self._streaming:
                raise _Detail(status, str(exc)) from None
            await self._refuse(f"{type(exc).__name__}: {exc}")
            return None
        finally:
            self._taking = None
            taking.cancel()  # (if this handler was stopped while it waited)
        if self._gone:
            self._reap(lease.kernel_id)
            return None
        return lease

    def _start_stream(self) -> None:
        """Send the stream's headers (once): its events follow."""
        if not self._streaming:
            self._streaming = True
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.set_header("Cache-Control", "no-store")

    async def _refuse(self, message: str) -> None:
        """Once the stream has started, an error can only be its final message."""
        dialect = None if "X-Progtc-API-Key" in self.request.headers else self.service.dialect
        await self._send(error_message("runtime_error", "", f"{message}\n", message, dialect))
        if not self._gone:
            self.finish()

    async def _stream(
        self, tools: ToolRegistry, request: ExecuteCodeRequest, kernel_id: str
    ) -> None:
        limits = self.service.limits
        kernel = ToolKernel(
            tools,
            kernel=self.service.pool.kernel(kernel_id),
            # The pool's warm-up loaded it: the full load expression again would cost
            # the kernel milliseconds (compiling ~75 KB) for nothing.
            extension="loaded",
            timeout=Timeout(
                limits.code_execution_timeout,
                tool_call=limits.tool_call_timeout,
                start=self.service.pool.start_timeout,
            ),
        )
        async with kernel:
            if request.modules:
                try:
                    await kernel.install_modules(request.modules)
                except ValueError as exc:
                    if not self._streaming:
                        raise _Detail(400, str(exc)) from None
                    await self._refuse(str(exc))
                    return
            self._start_stream()
            self._run = asyncio.ensure_future(self._final(kernel, request.code, kernel_id))
            while not self._run.done():
                await asyncio.wait({self._run}, timeout=KEEPALIVE)
                if not self._run.done():
                    await self._write(b": keep alive\n\n")
            final = self._run.result()
        await self._send(final)
        if not self._gone:
            self.finish()

    async def _final(self, kernel: ToolKernel, code: str, kernel_id: str) -> dict[str, Any]:
        """Run the code, keeping at most ``max_output`` characters of its output: one
        that prints more is stopped (the server holds what it keeps for the client)."""
        dialect = None if "X-Progtc-API-Key" in self.request.headers else self.service.dialect
        most = self.service.max_output
        kept: dict[str, list[str]] = {"stdout": [], "stderr": []}
        size = 0
        events = kernel.stream(code)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, ExecutionFinished):
                    return final_message(event.result, dialect)
                if isinstance(event, StreamOutput):
                    kept[event.name].append(event.text[: most - size])
                    size += len(event.text)
                elif isinstance(event, DisplayOutput):
                    size += sum(len(str(value)) for value in event.output.data.values())
                if size > most:
                    await self._stop_reading(kernel, kernel_id)
                    break
        self.service.output_stopped += 1
        stdout, stderr = "".join(kept["stdout"]), "".join(kept["stderr"])
        message = (
            f"OutputLimitExceeded: the code printed more than {most:,} characters, "
            "the most this server keeps for one execution; it was stopped there "
            "(print less, or raise progtc-kernel serve --max-output)"
        )
        return error_message("runtime_error", stdout, f"{stderr}{message}\n", message, dialect)

    async def _stop_reading(self, kernel: ToolKernel, kernel_id: str) -> None:
        """Stop a kernel that prints too much, and stop reading it at once: by now it
        has written far more than was read, into the server's sockets, and an
        interrupt would leave the server to read (and hold) all of it. Its kernel is
        shut down; what it wrote is dropped unread."""
        self._reap(kernel_id)
        await kernel.bridge.transport.close()

    def _reap(self, kernel_id: str) -> None:
        """End this execution's lease (its kernel is shut down), once."""
        if kernel_id in self.service.pool.leases:
            self.service.pool.release(kernel_id)

    async def _send(self, message: dict[str, Any]) -> None:
        await self._write(b"data: %s\n\n" % json.dumps(message, separators=(",", ":")).encode())

    async def _write(self, chunk: bytes) -> None:
        """Send a chunk; a client that does not take it within ``send_timeout`` is cut
        off (what the server buffered for it goes with the connection)."""
        self.write(chunk)
        try:
            await asyncio.wait_for(self.flush(), self.service.send_timeout)
        except StreamClosedError:
            pass  # on_connection_close handles it
        except asyncio.TimeoutError:
            self.service.clients_cut_off += 1
            log.warning(
                "progtc API: a client took nothing for %g s; cut off", self.service.send_timeout
            )
            self.request.connection.close()  # type: ignore[union-attr]
            self.on_connection_close()

    def on_connection_close(self) -> None:
        """The client went away: stop its code (the kernel is reaped after)."""
        self._gone = True
        if self._taking is not None:
            self._taking.cancel()  # no kernel for a client that is gone
        if self._run is not None:
            self._run.cancel()


def final_message(result: ExecutionResult, dialect: str | None) -> dict[str, Any]:
    """progtc's last message for an execution's result, in the client's dialect
    (``None``: progtc 0.1.6 and later)."""
    if result.error is None:
        return {"type": "success", "stdout": result.stdout, "stderr": result.stderr}
    error = result.error
    kind = (
        "syntax_error"
        if error.kind == "syntax"
        else "timeout_error"
        if error.kind == "timeout"
        else "runtime_error"
    )
    stderr = result.stderr + (error.traceback + "\n" if error.traceback else "")
    if error.kind == "kernel_died":
        stderr += f"{error.ename}: {error.evalue}\n"
    return error_message(kind, result.stdout, stderr, f"{error.ename}: {error.evalue}", dialect)


def error_message(
    kind: str, stdout: str, stderr: str, message: str, dialect: str | None
) -> dict[str, Any]:
    """An error's final message. progtc 0.1.1 says ``"type": "error"`` with the kind in
    ``"code"``; later releases say the kind in ``"type"`` (and ignore the rest)."""
    return {
        "type": "error" if dialect == "0.1.1" else kind,
        "stdout": stdout,
        "stderr": stderr,
        "code": ERROR_CODES[kind],
        "message": message,
    }


def routes() -> list[tuple[str, type]]:
    return [
        ("/ping", PingHandler),
        ("/execute-code", ExecuteCodeHandler),
        ("/tool-results", ToolResultsHandler),
    ]
