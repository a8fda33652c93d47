"""progtc 0.2's step API: ``POST /execute-code-step``, with runs that stay live.

    POST /execute-code-step  {"code", "tool_names", "modules"?, "state"?, "tool_results"?,
                              "determinism"?: "strict" | "order_only"}
      -> {"type": "tool_call", "tool_calls": [...], "state": "..."}
       | {"type": "success" | "syntax_error" | "runtime_error" | "timeout_error"
                | "determinism_error", "stdout", "stderr"}

A step runs the code until it has made every tool call it can make without a result,
and answers with those calls and a state; the client runs them (asking a person first,
say, in another process, hours later) and posts the next step with the same code, the
state and the results, in the calls' order. progtc's own server re-runs the code from
the start at every step, answering the calls it recorded from the state (replay).

Here the run stays **live**: its code waits in its kernel on the calls the step
returned, and the next step sends their results in; nothing runs twice. A live run
waits ``keep`` seconds for its next step (``serve --step-keep``); then its kernel is
shut down. A step whose run is gone (expired, the server restarted, a state from
progtc's own server, other code than the run's) falls back to progtc's replay: a new
kernel runs the code from the start with the recorded results, checking each replayed
call against the state by progtc's determinism mode (``strict``: the same tool with the
same arguments; ``order_only``: the same tool), and from the first new call on that run
is live again.

The state is progtc's own (base64 of gzipped JSON: the recorded results and call hashes
by call key, the keys of the calls last returned, the determinism mode), so that either
server can replay the other's, plus ``progtc_kernel``: the live run's id, its step
number, the client it belongs to and a signature by a secret of this server process.
Only the client that started a run (the same key, or the same user) can resume it; a
state of another client's live run is refused with a 403.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import json
import logging
import secrets
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic

from ..exceptions import PoolError, PoolExhausted
from ..host.results import ExecutionResult
from ..host.tool_kernel import ToolKernel
from ..host.tools import Tool
from ..timeouts import Timeout
from .progtc_api import MAX_BODY_BYTES, ExecuteCodeRequest, _Detail, _ProgtcHandler, final_message

log = logging.getLogger("progtc_kernel.server")

# How long a live run waits for its next step, by default (serve --step-keep).
DEFAULT_STEP_KEEP = 300.0
RUNNER = (Path(__file__).parent / "step_runner.py").read_text()
RUNNER_FILENAME = "<progtc-kernel step>"


class ExecuteCodeStepRequest(ExecuteCodeRequest):
    tool_results: list[pydantic.JsonValue] | None = None
    state: str | None = None
    determinism: Literal["strict", "order_only"] = "strict"


class LiveRef(pydantic.BaseModel):
    """Which live run a state continues, for which client, signed by this server."""

    run: str
    step: int
    client: str
    sig: str


class StepState(pydantic.BaseModel):
    """progtc 0.2.0's ``ExecuteCodeStepState``, and the live run it belongs to."""

    tool_results: dict[str, pydantic.JsonValue] = {}
    tool_call_hashes: dict[str, str] = {}
    pending_keys: list[str] = []
    determinism: Literal["strict", "order_only"] = "strict"
    progtc_kernel: LiveRef | None = None

    def encode(self) -> str:
        data = self.model_dump_json(exclude_none=True).encode()
        return base64.b64encode(gzip.compress(data)).decode()

    @classmethod
    def decode(cls, encoded: str) -> StepState:
        try:
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflate.decompress(base64.b64decode(encoded, validate=True), MAX_BODY_BYTES)
            if inflate.unconsumed_tail:
                raise ValueError(f"it holds more than {MAX_BODY_BYTES:,} bytes")
            return cls.model_validate_json(data)
        except (ValueError, zlib.error) as exc:
            raise _Detail(
                400,
                "'state' is not a state a step returned (send the last step's "
                f"'state' as it came): {exc}",
            ) from None


@dataclass
class Call:
    """A tool call the code made, waiting for the client's result."""

    key: str
    hash: str
    message: dict[str, Any]
    result: asyncio.Future[Any]


@dataclass
class LiveRun:
    """One step run, live in its kernel between steps."""

    id: str
    client: str
    code_of: str  # what the run runs: a hash of its code, tool names and modules
    state: StepState
    kernel_id: str
    kernel: ToolKernel | None = None
    execution: asyncio.Task[ExecutionResult] | None = None
    step: int = 0
    arrived: list[Call] = field(default_factory=list)  # made, not handed out yet
    pending: list[Call] = field(default_factory=list)  # handed out, waiting for results
    received: int = 0  # calls that reached the server
    announced: int = 0  # calls the kernel says it has made, when it went quiet
    handed_out: int = 0
    final: dict[str, Any] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    expiry: asyncio.TimerHandle | None = None
    busy: bool = False

    def tools(self) -> list[Tool]:
        """The host tools the kernel-side runner calls (not the code's tools)."""

        async def progtc_step_call(
            tool_name: str,
            frame_id: list[int],
            call_index: int,
            call_hash: str,
            args: list[Any],
            kwargs: dict[str, Any],
        ) -> Any:
            message = {
                "type": "tool_call",
                "id": uuid.uuid4().hex,
                "execution_id": self.id,
                "tool_name": tool_name,
                "args": args,
                "kwargs": kwargs,
                "frame_id": frame_id,
                "call_index": call_index,
            }
            key = f"{'.'.join(map(str, frame_id))}#{call_index}"
            call = Call(key, call_hash, message, asyncio.get_running_loop().create_future())
            self.arrived.append(call)
            self.received += 1
            self.changed.set()
            return await call.result

        async def progtc_step_ready(made: int) -> None:
            self.announced = max(self.announced, made)
            self.changed.set()

        async def progtc_step_done(message: dict[str, Any]) -> None:
            self.final = message
            self.changed.set()

        return [
            Tool.from_function(f, description="progtc's step API (internal)")
            for f in (progtc_step_call, progtc_step_ready, progtc_step_done)
        ]

    def batch_ready(self) -> bool:
        return bool(self.arrived) and self.received >= self.announced > self.handed_out

    async def next_message(self, ceiling: float | None) -> dict[str, Any] | list[Call]:
        """Wait for the code's next calls (a batch) or its end; ``ceiling``: seconds
        this step may compute (progtc's code execution timeout, per step)."""
        loop = asyncio.get_running_loop()
        deadline = None if ceiling is None else loop.time() + ceiling
        while True:
            self.changed.clear()
            if self.final is not None:
                return self.final
            if self.batch_ready():
                return self._hand_out()
            if self.execution is not None and self.execution.done():
                return self._ended()
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return {"type": "timeout_error", "stdout": "", "stderr": ""}
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def _hand_out(self) -> list[Call]:
        batch = sorted(
            self.arrived,
            key=lambda c: (tuple(c.message["frame_id"]), c.message["call_index"]),
        )
        self.arrived = []
        self.pending = batch
        self.handed_out += len(batch)
        self.step += 1
        for call in batch:
            self.state.tool_call_hashes[call.key] = call.hash
        self.state.pending_keys = [call.key for call in batch]
        return batch

    def _ended(self) -> dict[str, Any]:
        """The kernel's run ended without the runner's final message: the kernel died,
        or the runner itself failed."""
        assert self.execution is not None
        if self.execution.cancelled():
            return {"type": "runtime_error", "stdout": "", "stderr": "the run was cancelled\n"}
        message = final_message(self.execution.result(), None)
        return {"type": message["type"], "stdout": message["stdout"], "stderr": message["stderr"]}

    def resume(self, results: list[Any]) -> None:
        """The client's results for the calls the last step returned, in their order."""
        for call, result in zip(self.pending, results, strict=True):
            self.state.tool_results[call.key] = result
            if not call.result.done():
                call.result.set_result(result)
        self.pending = []
        self.state.pending_keys = []


def code_of(request: ExecuteCodeStepRequest) -> str:
    text = json.dumps([request.code, request.tool_names, request.modules], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class StepRuns:
    """The live step runs of a server, and the secret that signs their states.

    Args:
        pool: the server's kernel pool, which lends each run its kernel.
        keep: seconds a live run waits for its next step before it is ended.
    """

    def __init__(self, pool: Any, keep: float = DEFAULT_STEP_KEEP) -> None:
        self.pool = pool
        self.keep = keep
        self.runs: dict[str, LiveRun] = {}
        self._secret = secrets.token_bytes(32)  # one per process: a restart forgets runs
        self.resumed = 0  # steps that continued a live run
        self.replayed = 0  # steps that ran the code again from the start
        self.expired = 0
        self._ending: set[asyncio.Task[None]] = set()

    def client_of(self, handler: _ProgtcHandler) -> str:
        """Who is asking: the key (credential) it sends, else the server's user name."""
        credential = handler.request.headers.get("Authorization")
        user = getattr(handler.current_user, "username", "")
        basis = f"key:{credential}" if credential else f"user:{user}"
        return self._sign(basis)[:32]

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def ref(self, run: LiveRun) -> LiveRef:
        sig = self._sign(f"{run.id}:{run.step}:{run.client}")
        return LiveRef(run=run.id, step=run.step, client=run.client, sig=sig)

    def run_of(self, ref: LiveRef | None, client: str) -> LiveRun | None:
        """The live run a state continues, if this server signed it and it lives."""
        if ref is None:
            return None
        expected = self._sign(f"{ref.run}:{ref.step}:{ref.client}")
        if not hmac.compare_digest(expected, ref.sig):
            return None  # another server process's (a restart): replay
        if ref.client != client:
            raise _Detail(
                403,
                "this state belongs to another client's run: only the client that "
                "started a run (the same API key or user) can continue it",
            )
        return self.runs.get(ref.run)

    def expire_later(self, run: LiveRun) -> None:
        run.expiry = asyncio.get_running_loop().call_later(self.keep, self._expire, run)

    def _expire(self, run: LiveRun) -> None:
        if self.runs.get(run.id) is run and not run.busy:
            self.expired += 1
            log.info("progtc_kernel: step run %s had no next step in %g s", run.id, self.keep)
            self.end_soon(run)

    def end_soon(self, run: LiveRun) -> None:
        """End a run in the background: nobody waits for a kernel to shut down."""
        if self.runs.get(run.id) is not run:
            return
        ending = asyncio.ensure_future(self.end(run))
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)

    async def end(self, run: LiveRun) -> None:
        """End a run: its calls are cancelled and its kernel is shut down."""
        if self.runs.pop(run.id, None) is None:
            return
        if run.expiry is not None:
            run.expiry.cancel()
        for call in [*run.pending, *run.arrived]:
            call.result.cancel()
        if run.kernel_id in self.pool.leases:
            self.pool.release(run.kernel_id)
        if run.execution is not None:
            run.execution.cancel()
        if run.kernel is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await run.kernel.close()

    async def close(self) -> None:
        """End every live run (the server stops)."""
        await asyncio.gather(*(self.end(run) for run in list(self.runs.values())), *self._ending)


class ExecuteCodeStepHandler(_ProgtcHandler):
    @property
    def steps(self) -> StepRuns:
        return self.service.steps  # type: ignore[no-any-return]

    async def post(self) -> None:
        self.authenticate()
        request: ExecuteCodeStepRequest = self.body_as(ExecuteCodeStepRequest)
        client = self.steps.client_of(self)
        state = (
            StepState.decode(request.state)
            if request.state
            else StepState(determinism=request.determinism)
        )
        results = request.tool_results or []
        if results and len(results) != len(state.pending_keys):
            raise _Detail(
                400,
                f"Expected {len(state.pending_keys)} tool results for the tool calls "
                f"returned by the previous step, got {len(results)}.",
            )
        run = self.steps.run_of(state.progtc_kernel, client)
        if run is not None and self._continues(run, state, request, results):
            message = await self._resume(run, results)
        else:
            if run is not None and self._superseded(run, state):
                self.steps.end_soon(run)
            message = await self._replay(request, state, results, client)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(message, separators=(",", ":")))

    def _superseded(self, run: LiveRun, state: StepState) -> bool:
        """A run whose latest state comes back for a replay (other code, no results) is
        of no more use. (A run busy with a step is another request's: left alone.)"""
        ref = state.progtc_kernel
        return ref is not None and ref.step == run.step and not run.busy

    def _continues(
        self, run: LiveRun, state: StepState, request: ExecuteCodeStepRequest, results: list[Any]
    ) -> bool:
        ref = state.progtc_kernel
        return (
            ref is not None
            and ref.step == run.step
            and not run.busy
            and run.code_of == code_of(request)
            and bool(run.pending)
            and len(results) == len(run.pending)
        )

    async def _resume(self, run: LiveRun, results: list[Any]) -> dict[str, Any]:
        self.steps.resumed += 1
        if run.expiry is not None:
            run.expiry.cancel()
        run.resume(results)
        return await self._step(run)

    async def _replay(
        self,
        request: ExecuteCodeStepRequest,
        state: StepState,
        results: list[Any],
        client: str,
    ) -> dict[str, Any]:
        """progtc's replay: the recorded results, and these, by the keys of the calls
        the last step returned; the code runs again from the start in a new kernel."""
        self.steps.replayed += bool(state.tool_results or results)
        state.tool_results.update(zip(state.pending_keys, results, strict=False))
        if results:
            state.pending_keys = []
        state.progtc_kernel = None
        pool = self.service.pool
        try:
            lease = await pool.take(websocket=False)
        except PoolExhausted as exc:
            raise _Detail(503, str(exc)) from None
        except PoolError as exc:
            raise _Detail(500, str(exc)) from None
        lease.held = True  # its kernel waits busy between steps on purpose
        run = LiveRun(uuid.uuid4().hex, client, code_of(request), state, lease.kernel_id)
        self.steps.runs[run.id] = run
        try:
            await self._start(run, request)
        except BaseException:
            await self.steps.end(run)
            raise
        return await self._step(run)

    async def _start(self, run: LiveRun, request: ExecuteCodeStepRequest) -> None:
        pool = self.service.pool
        run.kernel = ToolKernel(
            run.tools(),
            kernel=pool.kernel(run.kernel_id),
            timeout=Timeout(None, tool_call=None, start=pool.start_timeout),
        )
        await run.kernel.start()
        if request.modules:
            try:
                await run.kernel.install_modules(request.modules)
            except ValueError as exc:
                raise _Detail(400, str(exc)) from None
        recorded = {
            "tool_results": run.state.tool_results,
            "tool_call_hashes": run.state.tool_call_hashes,
            "determinism": run.state.determinism,
        }
        cell = (
            f"_progtc_step = {{'__name__': 'progtc_kernel_step'}}\n"
            f"exec(compile({RUNNER!r}, {RUNNER_FILENAME!r}, 'exec'), _progtc_step)\n"
            f"await _progtc_step['run']({request.code!r}, {request.tool_names!r}, {recorded!r})\n"
        )
        run.execution = asyncio.ensure_future(run.kernel.execute(cell, timeout=None))
        run.execution.add_done_callback(lambda _: run.changed.set())

    async def _step(self, run: LiveRun) -> dict[str, Any]:
        """Wait for the run's next calls, or its end, and answer with it."""
        run.busy = True
        try:
            found = await run.next_message(self.service.limits.code_execution_timeout)
        finally:
            run.busy = False
        if isinstance(found, list):
            run.state.progtc_kernel = self.steps.ref(run)
            self.steps.expire_later(run)
            return {
                "type": "tool_call",
                "tool_calls": [call.message for call in found],
                "state": run.state.encode(),
            }
        self.steps.end_soon(run)  # after the answer, not before it
        return found


def routes() -> list[tuple[str, type]]:
    return [("/execute-code-step", ExecuteCodeStepHandler)]
