"""One host connection, as the kernel sees it: sends tool calls, takes results.

Calls made in one event-loop turn (an ``asyncio.gather``) leave as one batch. At
most ``max_in_flight`` calls are outstanding; the rest wait here, because iopub
drops messages under large bursts. Results may arrive on the main thread, the
shell-channel thread or the control thread: shared state sits behind one lock, an
awaited call's ``asyncio.Future`` is settled on its own event loop (a batch in one
hop), and a blocking call's ``concurrent.futures.Future`` on whichever thread
brought it.

Nothing here wakes on a period: a thread waiting for results sleeps until one comes,
until the nearest tool-call deadline (one timer on the kernel's loop for awaited
calls), or until Ctrl-C (on the main thread, the signal interrupts the wait; an
awaiting cell is woken by the signal wakeup fd of ``_ipykernel.InterruptWakeup``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import math
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ..exceptions import (
    HostDisconnectedError,
    ToolArgumentError,
    ToolDeniedError,
    ToolError,
    ToolTimeoutError,
)
from ..protocol import (
    HOLD_METADATA,
    CallRequest,
    Channel,
    Packed,
    RegisterBody,
    ToolSpec,
    pack,
    result_problem,
    signature_of,
)
from . import _ipykernel, tracing

# POSIX lets Ctrl-C interrupt a thread's wait on a lock (the main thread's signal
# handler then runs); Windows does not, so there a blocking call on the main thread
# still wakes this often to let Ctrl-C in.
WINDOWS_WAKE_INTERVAL = 0.1
# The deadline timer fires this long after the nearest deadline: calls that started
# together time out together, in one wake-up rather than one each.
TIMER_SLACK = 0.005

_ERRORS: dict[str, type[ToolError]] = {
    "arguments": ToolArgumentError,
    "unknown_tool": ToolError,
    "denied": ToolDeniedError,
}
_Future = asyncio.Future[Any] | concurrent.futures.Future[Any]


class PendingCall:
    """One call, from the line that made it to its result."""

    __slots__ = (
        "deadline",
        "future",
        "id",
        "iopub_mark",
        "loop",
        "owner",
        "parent",
        "queued",
        "request",
        "tool",
        "wakeup",
    )

    def __init__(
        self,
        call_id: int,
        tool: str,
        arguments: dict[str, Any],
        parent: dict[str, Any],
        owner: KernelBridge,
        traceparent: str | None = None,
    ) -> None:
        self.id = call_id
        self.tool = tool
        # Encoded now, so that an unsendable argument fails on the caller's own line.
        request: CallRequest = {"id": call_id, "tool": tool, "arguments": arguments}
        if traceparent is not None:
            request["traceparent"] = traceparent
        metadata = parent.get("metadata")
        if isinstance(metadata, dict) and HOLD_METADATA in metadata:
            request["held"] = True  # a resumable run's: the host waits for our ack to run it
        try:
            self.request = _dumps(request)
        except (TypeError, ValueError) as exc:
            raise ToolArgumentError(tool, "TypeError", _unsendable(exc)) from None
        self.parent = parent
        # The bridge that has the call now: a held call moves to the next host.
        self.owner = owner
        # The host said the call waits (for a thread, or an approval) and has not run.
        self.queued = False
        # Sent on iopub: the kernel's iopub count once it was (see KernelBridge.host_seen).
        self.iopub_mark: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where it is awaited, if it is
        self.deadline: float | None = None
        self.future: _Future | None = None
        # Set when a blocking call's result came or its deadline moved: its wait ends.
        self.wakeup: threading.Event | None = None

    @property
    def awaited(self) -> bool:
        return self.loop is not None


class KernelBridge:
    """Tool calls from kernel code to one host, and their results back."""

    def __init__(
        self,
        kernel: Any,
        comm_id: str,
        topic: bytes,
        host_session: str | None,
        *,
        shell_replies: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.kernel = kernel
        self.comm_id = comm_id
        self.topic = topic
        self.host_session = host_session
        self.shell_replies = shell_replies  # a ShellInterception, or None
        self.loop = loop  # the kernel's own loop: cells run here
        self.tools: dict[str, ToolSpec] = {}
        self.functions: dict[str, Any] = {}
        self.tool_timeout: float | None = None
        self.max_in_flight = 256
        self.asks_approval: frozenset[str] = frozenset()  # tools whose calls may wait
        self.closed_reason: str | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._in_flight: dict[int, PendingCall] = {}
        self._waiting: deque[PendingCall] = deque()
        self._outbox: list[PendingCall] = []
        self._cancelled: list[int] = []
        self._flush_scheduled = False
        # The one timer, on the kernel's loop, for the nearest deadline of awaited calls.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # The host's stdin connection, once it said it listens there (see send_direct),
        # and how many messages each route carried (for diagnostics and tests).
        self.stdin_identity: bytes | None = None
        self.sent_routes: Counter[str] = Counter()
        # The kernel's iopub messages (see _ipykernel.IopubCount) and how many of them
        # the host is known to have received: the count when it was sent a message it
        # answered (ready, or a call on iopub). stdin carries a message only while the
        # two are equal, so that it cannot overtake output on its way to the host.
        self.iopub: _ipykernel.IopubCount | None = None
        self.host_seen = 0

    # -- configuration from the host ------------------------------------------------

    def configure(self, body: RegisterBody) -> None:
        """Take the host's tools and limits; raises ValueError (changing nothing) for
        a body that would break later, when code calls a tool."""
        tools = _checked_tools(body.get("tools"))
        tool_timeout = body.get("tool_timeout")
        if tool_timeout is not None and not (_is_number(tool_timeout) and tool_timeout > 0):
            raise ValueError(
                f"tool_timeout must be a positive number or null, not {tool_timeout!r}"
            )
        max_in_flight = body.get("max_in_flight") or 256
        if type(max_in_flight) is not int:
            raise ValueError(f"max_in_flight must be an integer, not {max_in_flight!r}")
        asks_approval = body.get("approval", [])
        if not (isinstance(asks_approval, list) and all(isinstance(n, str) for n in asks_approval)):
            raise ValueError(f"'approval' must be a list of tool names, not {asks_approval!r:.80}")
        self.tools = tools
        self.functions = {}
        self.tool_timeout = tool_timeout
        self.max_in_flight = max(1, max_in_flight)
        self.asks_approval = frozenset(asks_approval)

    # -- calls from kernel code -----------------------------------------------------

    def new_call(self, tool: str, arguments: dict[str, Any]) -> PendingCall:
        """A call, checked and encoded, not sent yet."""
        if self.closed_reason is not None:
            raise HostDisconnectedError(tool, "HostDisconnectedError", self.closed_reason)
        return PendingCall(
            next(self._ids),
            tool,
            arguments,
            _ipykernel.parent_header(self.kernel),
            self,
            tracing.call_traceparent(),
        )

    async def call_async(self, call: PendingCall) -> Any:
        __tracebackhide__ = True
        loop = call.loop = asyncio.get_running_loop()
        future = call.future = loop.create_future()
        try:
            self._start(call)
            return await future
        except asyncio.CancelledError:
            call.owner._cancel(call)
            raise
        except ToolError as error:
            raise error.with_traceback(None) from None  # the caller's frames only

    def call_blocking(self, call: PendingCall) -> Any:
        __tracebackhide__ = True
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        call.future = future
        wakeup = call.wakeup = threading.Event()
        future.add_done_callback(lambda _: wakeup.set())
        try:
            # Ready for Ctrl-C before the call leaves: an interrupt landing just after
            # it left must cancel it on the host too.
            with _interruptible():
                self._start(call)
                self._sleep_until_done(call, future, wakeup)
        except BaseException as exc:
            call.owner._cancel(call)
            # Ctrl-C lands inside concurrent.futures and threading: show no such frames.
            raise exc.with_traceback(None) from None
        error = future.exception()
        if error is not None:  # raised here, so that no concurrent.futures frames show
            raise error.with_traceback(None) from None
        return future.result()

    def _sleep_until_done(
        self, call: PendingCall, future: concurrent.futures.Future[Any], wakeup: threading.Event
    ) -> None:
        """Sleep until the result comes or the call's deadline passes (its deadline
        may move meanwhile: ``wakeup`` says so). On the main thread Ctrl-C interrupts
        the wait, and its handler raises here."""
        on_windows_main = os.name == "nt" and threading.current_thread() is threading.main_thread()
        while True:
            wakeup.clear()  # before looking: a change from now on sets it again
            if future.done():
                return
            deadline = call.deadline
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                call.owner._expire(call)
                return
            if on_windows_main:
                left = WINDOWS_WAKE_INTERVAL if left is None else min(left, WINDOWS_WAKE_INTERVAL)
            wakeup.wait(left)

    def _start(self, call: PendingCall) -> None:
        if self.closed_reason is not None:
            raise HostDisconnectedError(call.tool, "HostDisconnectedError", self.closed_reason)
        with self._lock:
            self._waiting.append(call)
        self._pump()

    # -- sending --------------------------------------------------------------------

    def _pump(self) -> None:
        """Move waiting calls into flight while there is room, and send them."""
        admitted: list[PendingCall] = []
        with self._lock:
            while self._waiting and len(self._in_flight) < self.max_in_flight:
                call = self._waiting.popleft()
                if self.tool_timeout:
                    call.deadline = time.monotonic() + self.tool_timeout
                self._in_flight[call.id] = call
                admitted.append(call)
        self._deadlines_set([call for call in admitted if call.deadline is not None])
        on_loop = [call for call in admitted if call.loop is self.loop]
        elsewhere = [call for call in admitted if call.loop is not self.loop]
        if elsewhere:  # blocking calls, and calls awaited on other threads' loops
            self._send_calls(elsewhere)
        if on_loop:
            self._queue(on_loop)

    def _queue(
        self, calls: list[PendingCall] | None = None, cancelled: list[int] | None = None
    ) -> None:
        """Coalesce what one loop turn produces into one message per kind; the first
        call of a turn leaves at once, so that a lone call waits for nothing, unless
        it may need approval: then the turn's calls leave together, so that the host
        asks about a ``gather``'s calls at once."""
        on_loop = _on_loop_thread(self.loop)
        with self._lock:
            send_now = (
                bool(calls)
                and on_loop
                and not self._flush_scheduled
                and not any(call.tool in self.asks_approval for call in calls or ())
            )
            if not send_now:
                self._outbox.extend(calls or ())
            self._cancelled.extend(cancelled or ())
            schedule = on_loop and not self._flush_scheduled
            self._flush_scheduled = self._flush_scheduled or on_loop
        if send_now and calls:
            self._send_calls(calls)
        if schedule:
            self.loop.call_soon(self._flush)
        elif not on_loop:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            calls, self._outbox = self._outbox, []
            cancelled, self._cancelled = self._cancelled, []
            self._flush_scheduled = False
        if calls:
            self._send_calls(calls)
        if cancelled:
            self.send_direct(pack("cancelled", {"ids": cancelled, "reason": "interrupt"}))

    def _send_calls(self, calls: list[PendingCall]) -> None:
        channel = self._reply_channel(on_loop=calls[0].loop is self.loop)
        # A CallsBody, assembled from the requests each call encoded up front.
        body = b'{"calls":[%s],"reply_channel":"%s"}' % (
            b",".join(c.request for c in calls),
            channel.encode(),
        )
        _ipykernel.flush_pending_output()  # counted in self.iopub, if there was some
        mark = self.send_direct(pack("calls", body), calls[0].parent)
        for call in calls:
            call.iopub_mark = mark

    def resend_in_flight(self) -> None:
        """Send again every call still waiting for its result: the connection to the
        host dropped and came back, and the call or its result may have been lost."""
        with self._lock:
            calls = sorted(self._in_flight.values(), key=lambda call: call.id)
        groups: dict[tuple[bool, str], list[PendingCall]] = {}
        for call in calls:
            key = (call.loop is self.loop, str(call.parent.get("msg_id", "")))
            groups.setdefault(key, []).append(call)
        for group in groups.values():
            self._send_calls(group)

    def _reply_channel(self, on_loop: bool) -> Channel:
        shell = self.shell_replies
        if shell is None or not shell.installed.is_set():
            return "control"
        # On ipykernel 6 the shell stream shares the main thread: a blocking call
        # there would starve the very callback that brings its result.
        if not on_loop and shell.on_main_thread:
            return "control"
        return "shell"

    def send(self, message: Packed, parent: dict[str, Any] | None = None) -> None:
        """Send one protocol message (built by ``protocol.pack``) to the host, from any
        thread."""
        data, buffers = message
        _ipykernel.publish_comm_msg(
            self.kernel,
            self.comm_id,
            self.topic,
            data,
            buffers,
            parent if parent is not None else _ipykernel.parent_header(self.kernel),
        )

    def send_direct(self, message: Packed, parent: dict[str, Any] | None = None) -> int | None:
        """Send calls and cancellations to this host alone, on its stdin connection,
        where it listens there, this is the main thread and nothing the kernel
        published on iopub may still be on its way to the host; else on iopub
        (``send``). Returns the kernel's iopub count after an iopub send, else None.

        The stdin route skips what a Jupyter Server does to every iopub message
        (rate-checks it and decodes it again, for every connected client) and what
        every other client on the kernel does with it (decode it, nbclient too)."""
        data, buffers = message
        if parent is None:
            parent = _ipykernel.parent_header(self.kernel)
        identity = self.stdin_identity
        iopub = self.iopub
        if (
            identity is not None
            and iopub is not None
            and iopub.value == self.host_seen
            and _ipykernel.send_on_stdin(self.kernel, identity, self.comm_id, data, buffers, parent)
        ):
            self.sent_routes["stdin"] += 1
            return None
        self.sent_routes["iopub"] += 1
        self.send(message, parent)
        return iopub.value if iopub is not None else None

    # -- results and cancellation -----------------------------------------------------

    def take_results(self, results: Any) -> list[str]:
        """Resolve calls from a ``results`` message; returns what was wrong with it.
        Runs on any thread.

        Each entry is checked completely before its call leaves the in-flight table
        (``result_problem`` never raises), so that a malformed one fails its call
        instead of orphaning it: every call ends."""
        if not isinstance(results, list):
            return ["'results' must be a list"]
        problems: list[str] = []
        settlements: list[_Settlement] = []
        with self._lock:
            for entry in results:
                call_id = entry.get("id") if isinstance(entry, dict) else None
                if type(call_id) is not int:
                    problems.append("a result needs an integer 'id'")
                    continue
                problem = result_problem(entry)
                if problem is not None:
                    problems.append(problem)
                call = self._in_flight.pop(call_id, None)
                if call is not None:  # a call missing here timed out or was cancelled
                    settlements.append(_settlement(call, entry, problem))
                    if call.iopub_mark is not None:  # the host got it: and all before it
                        self.host_seen = max(self.host_seen, call.iopub_mark)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
        for settlement in settlements:
            loop = settlement[0].loop
            if loop is None or _on_loop_thread(loop):
                self._settle(*settlement)
            else:
                by_loop.setdefault(loop, []).append(settlement)
        for loop, batch in by_loop.items():  # one hop to each loop for the whole batch
            loop.call_soon_threadsafe(self._settle_all, batch)
        self._pump()
        return problems

    def fail(self, ids: list[int], message: str) -> None:
        """Fail these calls with a ToolError (a message about them was unusable)."""
        with self._lock:
            calls = [call for i in ids if (call := self._in_flight.pop(i, None)) is not None]
        for call in calls:
            self._settle(call, error=ToolError(call.tool, "ProtocolError", message))
        self._pump()

    def mark_queued(self, ids: list[int], queued: bool) -> list[int]:
        """The host says these calls wait for a free thread (or, no longer: they run
        now). Waiting is not charged to ``tool_timeout``: the clock stops while they
        wait and starts afresh when they run. (Slots free up as running calls end or
        time out, and a host that leaves fails them all, so nothing waits forever.)
        Returns the ids of the calls this host still has (those it may run)."""
        now = time.monotonic()
        started: list[PendingCall] = []
        marked: list[int] = []
        with self._lock:
            for call_id in ids:
                call = self._in_flight.get(call_id)
                if call is not None:
                    marked.append(call_id)
                    call.queued = queued
                    call.deadline = (
                        None if queued or not self.tool_timeout else now + self.tool_timeout
                    )
                    if call.deadline is not None:
                        started.append(call)
        # A deadline taken away needs no wake-up: whoever watched it finds none then.
        self._deadlines_set(started)
        return marked

    def _settle_all(self, batch: list[_Settlement]) -> None:
        for settlement in batch:
            self._settle(*settlement)

    def _settle(
        self, call: PendingCall, value: Any = None, error: BaseException | None = None
    ) -> None:
        """Complete a call's future on the thread that may touch it."""
        if call.loop is not None and not _on_loop_thread(call.loop):
            call.loop.call_soon_threadsafe(functools.partial(self._settle, call, value, error))
            return
        future = call.future
        if future is None or future.done():
            return  # cancelled or timed out just before
        with contextlib.suppress(concurrent.futures.InvalidStateError, asyncio.InvalidStateError):
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def close(
        self, reason: str, held: Callable[[PendingCall], bool] | None = None
    ) -> list[PendingCall]:
        """The host is gone: refuse new calls, and fail the pending ones, except the
        calls of held runs (``held``) that the host never started: those are
        returned, to be sent to the next host. A held run's call the host may have
        been running fails, saying so: it is not sent again, so it never runs twice."""
        self.closed_reason = reason
        with self._lock:
            in_flight = list(self._in_flight.values())
            waiting = list(self._waiting)
            self._in_flight.clear()
            self._waiting.clear()
        kept: list[PendingCall] = []
        for call in waiting + in_flight:
            if held is None or not held(call):
                message = reason
            elif call.queued or call in waiting:
                kept.append(call)
                continue
            else:
                message = f"{reason}; {MAY_HAVE_RUN}"
            self._settle(
                call, error=HostDisconnectedError(call.tool, "HostDisconnectedError", message)
            )
        return kept

    def take_calls(self, calls: list[PendingCall]) -> None:
        """Send these calls of held runs, whose host went, to this host. They are
        numbered afresh: ids are this connection's own."""
        with self._lock:
            for call in sorted(calls, key=lambda call: call.id):
                call.id = next(self._ids)
                call.request = _renumbered(call.request, call.id)
                call.owner = self
                self._waiting.append(call)
        self._pump()

    def _expire(self, call: PendingCall) -> None:
        message = f"no result within {self.tool_timeout:g} s (the tool-call timeout)"
        with self._lock:
            known = self._in_flight.pop(call.id, None) is not None
        self._settle(call, error=ToolTimeoutError(call.tool, "TimeoutError", message))
        if known:
            self.send_direct(
                pack("cancelled", {"ids": [call.id], "reason": "timeout"}), call.parent
            )
        self._pump()

    def _cancel(self, call: PendingCall) -> None:
        """The caller gave up (Ctrl-C, a cancelled task): tell the host to stop too."""
        with self._lock:
            in_flight = self._in_flight.pop(call.id, None) is not None
            if not in_flight and call in self._waiting:
                self._waiting.remove(call)
        if call.future is not None:
            call.future.cancel()
        if in_flight and self.closed_reason is None:
            if call.loop is self.loop and _on_loop_thread(self.loop):
                self._queue(cancelled=[call.id])
            else:
                self.send_direct(
                    pack("cancelled", {"ids": [call.id], "reason": "interrupt"}), call.parent
                )
        self._pump()

    # -- deadlines: per-call timeouts, woken for, never polled ------------------------

    def _deadlines_set(self, calls: list[PendingCall]) -> None:
        """These calls have a new deadline: wake whoever watches it. A blocking call's
        own thread watches its deadline; the kernel's loop those of awaited calls."""
        nearest: float | None = None
        for call in calls:
            if call.wakeup is not None:
                call.wakeup.set()
            elif call.awaited and call.deadline is not None:
                nearest = call.deadline if nearest is None else min(nearest, call.deadline)
        if nearest is not None:
            self._watch_deadline(nearest)

    def _watch_deadline(self, deadline: float) -> None:
        """Have the timer fire by ``deadline`` (from any thread)."""
        with self._lock:
            if self._timer_at is not None and self._timer_at <= deadline:
                return  # it fires earlier, and then looks for the next deadline
            self._timer_at = deadline
        if _on_loop_thread(self.loop):
            self._set_timer()
        else:
            self.loop.call_soon_threadsafe(self._set_timer)

    def _set_timer(self) -> None:
        """(On the kernel's loop.) Set the timer for the nearest deadline known."""
        with self._lock:
            at = self._timer_at
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if at is not None:
            self._timer = self.loop.call_later(
                max(0.0, at - time.monotonic()) + TIMER_SLACK, self._on_timer
            )

    def _on_timer(self) -> None:
        """Fail the awaited calls whose deadline passed; watch the next deadline."""
        self._timer = None
        now = time.monotonic()
        with self._lock:
            self._timer_at = None  # from here on, a new deadline sets the timer again
            timed = [c for c in self._in_flight.values() if c.awaited and c.deadline is not None]
        expired = [call for call in timed if call.deadline is not None and call.deadline <= now]
        later = [
            call.deadline for call in timed if call.deadline is not None and call.deadline > now
        ]
        for call in expired:
            self._expire(call)
        if later:
            self._watch_deadline(min(later))


class _interruptible:
    """Let Ctrl-C stop a blocking call, even in a cell that ipykernel runs as async.

    For async cells ipykernel swaps in a SIGINT handler that cancels the cell on the
    event loop, which a blocked main thread never reaches. While we block we raise
    KeyboardInterrupt ourselves, or CancelledError inside a task (a KeyboardInterrupt
    escaping a task would stop the kernel's event loop).
    """

    def __enter__(self) -> None:
        self.saved: Any = None
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            in_task = asyncio.current_task() is not None
        except RuntimeError:
            in_task = False

        def on_sigint(signum: int, frame: Any) -> None:
            if in_task:
                raise asyncio.CancelledError("interrupted during a tool call")
            raise KeyboardInterrupt

        self.saved = signal.signal(signal.SIGINT, on_sigint)

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            signal.signal(signal.SIGINT, self.saved)


# A call, and the value or error to complete it with.
_Settlement = tuple[PendingCall, Any, BaseException | None]


def _settlement(call: PendingCall, result: Any, problem: str | None) -> _Settlement:
    """What a ``results`` entry completes its call with (``problem``: what is wrong)."""
    if problem is not None:
        return (
            call,
            None,
            ToolError(call.tool, "ProtocolError", f"the host sent a malformed result ({problem})"),
        )
    if result["ok"]:
        return call, result["value"], None
    error = result["error"]
    return (
        call,
        None,
        _ERRORS.get(error["kind"], ToolError)(call.tool, error["type"], error["message"]),
    )


def _checked_tools(specs: Any) -> dict[str, ToolSpec]:
    """The tools of a ``register`` or ``tools`` body, each usable as a function."""
    if not isinstance(specs, list):
        raise ValueError("'tools' must be a list")
    tools: dict[str, ToolSpec] = {}
    for spec in specs:
        name = spec.get("name") if isinstance(spec, dict) else None
        # ``namespace.tool`` for the tools of a named upstream (``tools.github``)
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".", 1)):
            raise ValueError(f"a tool needs a name that is a Python identifier: {spec!r:.80}")
        if not isinstance(spec.get("description"), (str, type(None))):
            raise ValueError(f"tool {name!r}: 'description' must be a string or null")
        try:
            str(signature_of(spec))  # what code sees of it: built and shown
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"tool {name!r}: unusable signature ({exc!r:.80})") from None
        tools[name] = spec
    return tools


MAY_HAVE_RUN = (
    "the call may or may not have run there (the host had it and had not said it was "
    "waiting), so it is not sent again to another host"
)


def _renumbered(request: bytes, call_id: int) -> bytes:
    """A call request (``_dumps`` of a ``CallRequest``: its ``id`` first) with a new id."""
    return b'{"id":%d,%s' % (call_id, request[request.index(b",") + 1 :])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _json_default(value: Any) -> Any:
    """Send the richer values kernel code commonly holds as their JSON form."""
    if hasattr(value, "model_dump"):  # pydantic models
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses

        return dataclasses.asdict(value)
    if hasattr(value, "isoformat"):  # datetime, date, time
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    import enum
    import uuid
    from decimal import Decimal
    from pathlib import PurePath

    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (uuid.UUID, Decimal, PurePath)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(
            "bytes cannot be sent to the host as they are; send text, e.g. "
            "base64.b64encode(data).decode('ascii')"
        )
    raise TypeError(f"a {type(value).__name__} value cannot be sent to the host")


def _dumps(body: Any) -> bytes:
    # NaN and infinities travel as JSON's common extension (NaN, Infinity), both ways.
    return json.dumps(body, separators=(",", ":"), default=_json_default).encode()


def _unsendable(exc: Exception) -> str:
    return f"{exc}; pass JSON-compatible values (str, int, float, bool, None, list, dict)"
