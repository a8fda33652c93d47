"""progtc's own HTTP API, so that the ``progtc`` package's clients work unchanged.

    GET  /ping           200, empty (no key needed)
    POST /execute-code   {"code", "tool_names", "modules"?} -> a server-sent-events stream
    POST /tool-results   {"execution_id", "tool_call_id", "result"} -> null

The stream carries ``data: {"type": "tool_call", "id", "execution_id", "tool_name",
"args", "kwargs"}`` events, a ``: keep alive`` comment after 15 quiet seconds, then one
final ``{"type": "success" | "syntax_error" | "runtime_error" | "timeout_error",
"stdout", "stderr"}``; errors also carry the seed release's ``"code"`` and
``"message"``. The server is the host here: each tool call of the code becomes an
event, and the client's ``/tool-results`` post answers it.

Two generations of clients, told apart by how they send the key:
``X-Progtc-API-Key: KEY`` (progtc 0.1.6 to 0.2) and ``Authorization: Bearer KEY``
(progtc up to 0.1.5). Both get the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import uuid
from typing import Any

import pydantic
from tornado import web
from tornado.iostream import StreamClosedError

from ..host.errors import ToolDefinitionError
from ..host.results import ExecutionResult
from ..host.tool_kernel import ToolKernel
from ..host.tools import Tool, ToolRegistry
from ..kernel.modules import problem_with_name
from .pool import PoolError, PoolExhausted

log = logging.getLogger("progtc_kernel.server")

KEEPALIVE = 15.0  # seconds of silence before a keep-alive comment, as progtc sends
ERROR_CODES = {"syntax_error": "code_compilation_error", "runtime_error": "code_runtime_error",
               "timeout_error": "code_timeout_error"}


class ExecuteCodeRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    code: str
    tool_names: list[str] = []
    modules: dict[str, str] = {}

    @pydantic.field_validator("modules")
    @classmethod
    def _module_names(cls, modules: dict[str, str]) -> dict[str, str]:
        for name in modules:
            if problem := problem_with_name(name):
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
        return ToolRegistry.of({name: self._proxy(name) for name in names})

    def _proxy(self, name: str) -> Tool:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.call(name, list(args), kwargs)

        return Tool.from_function(call, name=name, description=f"The client's {name!r}.")

    async def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        call_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = future
        self.issued.add(call_id)
        try:
            await self.send({"type": "tool_call", "id": call_id, "execution_id": self.id,
                             "tool_name": name, "args": args, "kwargs": kwargs})
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


class _ProgtcHandler(web.RequestHandler):
    """progtc's conventions: JSON bodies, ``{"detail": ...}`` errors, its two keys."""

    @property
    def service(self) -> Any:
        return self.settings["progtc_kernel"]

    def check_xsrf_cookie(self) -> None:
        """No cookie authenticates here, only a header: no request can be forged."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        detail = exc.detail if isinstance(exc, _Detail) else self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"detail": detail}))

    def authenticate(self) -> None:
        key = self.service.api_key
        given = self.request.headers.get("X-Progtc-API-Key")
        if given is None:
            scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        if not key:
            return  # a server on loopback without a key
        if given is None:
            self.set_header("WWW-Authenticate", "Bearer")
            raise _Detail(401, "Not authenticated: send the API key as 'X-Progtc-API-Key: "
                          "KEY' (or 'Authorization: Bearer KEY')")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise _Detail(401, "Unauthorized: the API key is wrong")

    def body_as(self, model: type[pydantic.BaseModel]) -> Any:
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
            raise _Detail(404, f"execution {posted.execution_id!r} made no tool call "
                          f"{posted.tool_call_id!r}")
        self.set_header("Content-Type", "application/json")
        self.finish("null")


class ExecuteCodeHandler(_ProgtcHandler):
    _run: asyncio.Task[dict[str, Any]] | None = None
    _gone = False

    async def post(self) -> None:
        self.authenticate()
        request: ExecuteCodeRequest = self.body_as(ExecuteCodeRequest)
        execution = Execution(self._send)
        try:
            tools = execution.tools(request.tool_names)
        except ToolDefinitionError as exc:
            raise _Detail(422, [{"type": "value_error", "loc": ["body", "tool_names"],
                                 "msg": str(exc)}]) from None
        try:
            lease = await self.service.pool.take(websocket=False)
        except PoolExhausted as exc:
            raise _Detail(503, str(exc)) from None
        except PoolError as exc:
            raise _Detail(500, str(exc)) from None
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
            self.service.pool.release(lease.kernel_id)

    async def _stream(self, tools: ToolRegistry, request: ExecuteCodeRequest,
                      kernel_id: str) -> None:
        limits = self.service.limits
        manager = self.service.pool.kernel_manager.get_kernel(kernel_id)
        kernel = ToolKernel(tools, kernel=manager,
                            timeout=limits.code_execution_timeout,
                            tool_timeout=limits.tool_call_timeout)
        async with kernel:
            if request.modules:
                try:
                    await kernel.install_modules(request.modules)
                except ValueError as exc:
                    raise _Detail(400, str(exc)) from None
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self._run = asyncio.ensure_future(self._final(kernel, request.code))
            while not self._run.done():
                await asyncio.wait({self._run}, timeout=KEEPALIVE)
                if not self._run.done():
                    await self._write(b": keep alive\n\n")
            final = self._run.result()
        await self._send(final)
        self.finish()

    async def _final(self, kernel: ToolKernel, code: str) -> dict[str, Any]:
        return final_message(await kernel.execute(code), code)

    async def _send(self, message: dict[str, Any]) -> None:
        await self._write(b"data: %s\n\n" % json.dumps(message, separators=(",", ":")).encode())

    async def _write(self, chunk: bytes) -> None:
        self.write(chunk)
        with contextlib.suppress(StreamClosedError):  # on_connection_close handles it
            await self.flush()

    def on_connection_close(self) -> None:
        """The client went away: stop its code (the kernel is reaped after)."""
        self._gone = True
        if self._run is not None:
            self._run.cancel()


def final_message(result: ExecutionResult, code: str) -> dict[str, Any]:
    """progtc's last message for an execution's result."""
    if result.error is None:
        return {"type": "success", "stdout": result.stdout, "stderr": result.stderr}
    error = result.error
    kind = ("syntax_error" if error.kind == "syntax" else
            "timeout_error" if error.kind == "timeout" else "runtime_error")
    stderr = result.stderr + (error.traceback + "\n" if error.traceback else "")
    if error.kind == "kernel_died":
        stderr += f"{error.ename}: {error.evalue}\n"
    return {"type": kind, "stdout": result.stdout, "stderr": stderr,
            "code": ERROR_CODES[kind], "message": f"{error.ename}: {error.evalue}"}


def routes() -> list[tuple[str, type]]:
    return [("/ping", PingHandler), ("/execute-code", ExecuteCodeHandler),
            ("/tool-results", ToolResultsHandler)]
