"""Running the tool calls a kernel sends: each on a task of its own, answered once
(a call sent again after a reconnect is answered from a cache of recent results),
results and thread notices batched per loop turn."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from ..protocol import Channel, Packed, pack
from .events import Event, ToolCallFinished, ToolCallStarted
from .results import ToolCallRecord
from .threads import ToolThreads
from .tools import ToolRegistry

# Sends one progtc message (built by ``protocol.pack``) to the kernel on a channel.
SendToKernel = Callable[[Channel, Packed], None]
# Tells the kernel calls wait for a free thread (``queued``), or run now (``started``).
Notice = Literal["queued", "started"]
# Called with the msg_id of the request whose code made the call, and the event.
ToolEventListener = Callable[[str | None, Event], None]

# The bridge whose tool is running in this context (a task or a tool's thread).
serving: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "progtc_kernel_serving", default=None
)

# Results kept to answer a call the kernel sends again after a reconnect without
# running its tool twice. A lost result belongs to a call still in flight, and at
# most ``max_in_flight`` calls are: twice that many recent results cover them.
ANSWER_BYTES_KEPT = 64 * 2**20


class CallServer:
    """The tool calls of one bridge's comm.

    Args:
        owner: the bridge, which ``serving`` names while one of its tools runs.
        send: sends a message to the kernel.
        emit: receives a ``ToolCallStarted`` and a ``ToolCallFinished`` per call.
        threads: the threads sync tools run on.
        max_in_flight: calls the kernel keeps outstanding at once.
    """

    def __init__(
        self,
        owner: object,
        send: SendToKernel,
        emit: ToolEventListener,
        threads: ToolThreads,
        max_in_flight: int,
    ) -> None:
        self._owner = owner
        self._send = send
        self._emit = emit
        self.threads = threads
        self.max_in_flight = max_in_flight
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._answered: OrderedDict[int, bytes] = OrderedDict()  # call id -> result entry
        self._answered_bytes = 0
        self._outbox: dict[Channel, list[bytes]] = {"shell": [], "control": []}
        self._notices: dict[tuple[Notice, Channel], list[int]] = {}
        self._flush_scheduled = False

    def serve(
        self,
        registry: ToolRegistry,
        call_id: int,
        name: str,
        arguments: dict[str, Any],
        channel: Channel,
        parent_id: str | None,
    ) -> None:
        """Run one call, unless it runs already or was answered (sent again)."""
        if call_id in self.tasks:
            return  # sent again after a reconnect: it runs, and will answer
        answered = self._answered.get(call_id)
        if answered is not None:  # sent again after a reconnect: its result was lost
            self._reply(channel, answered)
            return
        self._emit(parent_id, ToolCallStarted(call_id, name, arguments))
        task = asyncio.get_running_loop().create_task(
            self._run(registry, call_id, name, arguments, channel, parent_id)
        )
        self.tasks[call_id] = task

    def cancel(self, call_ids: list[int]) -> None:
        """Cancel these calls (the code waiting for them gave up)."""
        for call_id in call_ids:
            task = self.tasks.get(call_id)
            if task is not None:
                task.cancel()

    def cancel_all(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()

    def forget_answers(self) -> None:
        """A new comm numbers its calls from 1 again."""
        self._answered.clear()
        self._answered_bytes = 0

    async def wait_all(self) -> None:
        """Until every call's task has ended."""
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _run(
        self,
        registry: ToolRegistry,
        call_id: int,
        name: str,
        arguments: dict[str, Any],
        channel: Channel,
        parent_id: str | None,
    ) -> None:
        serving.set(self._owner)
        started = time.perf_counter()
        try:
            outcome = await registry.call(
                name,
                arguments,
                self.threads,
                on_queued=lambda: self._notice("queued", channel, call_id),
                on_started=lambda: self._notice("started", channel, call_id),
            )
        except asyncio.CancelledError:
            record = ToolCallRecord(
                id=call_id,
                name=name,
                arguments=arguments,
                ok=False,
                duration=time.perf_counter() - started,
                error="cancelled",
            )
            self._emit(parent_id, ToolCallFinished(record))
            raise
        finally:
            self.tasks.pop(call_id, None)
        entry = outcome.entry(call_id)
        self._reply(channel, entry)
        self._remember(call_id, entry)
        record = ToolCallRecord(
            id=call_id,
            name=name,
            arguments=arguments,
            ok=outcome.ok,
            duration=time.perf_counter() - started,
            error=outcome.describe_error(),
        )
        self._emit(parent_id, ToolCallFinished(record))

    def _remember(self, call_id: int, entry: bytes) -> None:
        self._answered[call_id] = entry
        self._answered_bytes += len(entry)
        while self._answered and (
            len(self._answered) > 2 * self.max_in_flight or self._answered_bytes > ANSWER_BYTES_KEPT
        ):
            _, dropped = self._answered.popitem(last=False)
            self._answered_bytes -= len(dropped)

    def _reply(self, channel: Channel, entry: bytes) -> None:
        """The first result of a loop turn leaves at once; the rest of the turn's
        results (a gather's) follow together."""
        if self._schedule_flush():
            self._send_results(channel, [entry])
        else:
            self._outbox[channel].append(entry)

    def _notice(self, kind: Notice, channel: Channel, call_id: int) -> None:
        """Tell the kernel a call waits for a thread, or runs now (batched per turn)."""
        self._notices.setdefault((kind, channel), []).append(call_id)
        self._schedule_flush()

    def _schedule_flush(self) -> bool:
        """Flush at the end of this loop turn; True if this call scheduled it."""
        if self._flush_scheduled:
            return False
        self._flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        notices, self._notices = self._notices, {}
        for (kind, channel), ids in notices.items():
            self._send(channel, pack(kind, {"ids": ids}))
        for channel, entries in self._outbox.items():
            if entries:
                self._outbox[channel] = []
                self._send_results(channel, entries)

    def _send_results(self, channel: Channel, entries: list[bytes]) -> None:
        self._send(channel, pack("results", b'{"results":[%s]}' % b",".join(entries)))
