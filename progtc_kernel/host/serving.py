"""Running the tool calls a kernel sends: each on a task of its own, answered once
(a call sent again after a reconnect is answered from a cache of recent results),
results and notices batched per loop turn. A call that needs approval waits for the
approval gate's decision (``approval.py``) before its tool runs."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from ..approval import ApprovalGate, ApprovalRequest, CancelReason, Decision, PendingApproval
from ..protocol import CallRequest, Channel, Packed, pack
from . import tracing
from .events import (
    ApprovalCancelled,
    ApprovalDecided,
    ApprovalRequested,
    Event,
    ToolCallFinished,
    ToolCallStarted,
)
from .results import ApprovalRecord, ToolCallRecord
from .threads import ToolThreads
from .tools import Outcome, ToolRegistry, failure

# Sends one progtc message (built by ``protocol.pack``) to the kernel on a channel.
SendToKernel = Callable[[Channel, Packed], None]
# Tells the kernel calls wait (for a free thread, for approval: ``queued``), or run now
# (``started``).
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
# The record of a call an earlier ``allow_for_run`` covered: not asked, still recorded.
RUN_GRANT = ApprovalRecord(asked=False, decision="allow", decided_by="run_grant")


class CallServer:
    """The tool calls of one bridge's comm.

    Args:
        owner: the bridge, which ``serving`` names while one of its tools runs.
        send: sends a message to the kernel.
        emit: receives a ``ToolCallStarted`` and a ``ToolCallFinished`` per call, and
            the approval events.
        threads: the threads sync tools run on.
        max_in_flight: calls the kernel keeps outstanding at once.
        gate: decides the calls that need approval (default: none do).
    """

    def __init__(
        self,
        owner: object,
        send: SendToKernel,
        emit: ToolEventListener,
        threads: ToolThreads,
        max_in_flight: int,
        gate: ApprovalGate | None = None,
    ) -> None:
        self._owner = owner
        self._send = send
        self._emit = emit
        self.threads = threads
        self.max_in_flight = max_in_flight
        self.gate = gate or ApprovalGate()
        self.gate.listener = self
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._answered: OrderedDict[int, bytes] = OrderedDict()  # call id -> result entry
        self._answered_bytes = 0
        self._outbox: dict[Channel, list[bytes]] = {"shell": [], "control": []}
        self._notices: dict[int, tuple[Notice, Channel]] = {}  # this turn's, per call
        self._queued: set[int] = set()  # calls the kernel was last told wait
        # Held calls told to wait, now to run once the kernel acknowledges their start.
        self._acks: dict[int, tuple[asyncio.Future[None], Channel]] = {}
        self._held: set[int] = set()  # calls of resumable runs (``CallRequest.held``)
        # Held calls told to wait, whose ``queued`` the kernel has not acknowledged yet.
        self._queue_acks: dict[int, tuple[asyncio.Future[None], Channel]] = {}
        self._cancel_reasons: dict[int, CancelReason] = {}
        self._flush_scheduled = False
        # With tracing on: record each call's arguments and result in its span.
        self.trace_content = False

    def serve(
        self,
        registry: ToolRegistry,
        calls: list[CallRequest],
        channel: Channel,
        parent_id: str | None,
    ) -> None:
        """Run the calls of one ``calls`` message, but those that run already or were
        answered (sent again). Those that need approval are asked about together."""
        fresh: list[CallRequest] = []
        for call in calls:
            if call["id"] in self.tasks:
                continue  # sent again after a reconnect: it runs, and will answer
            answered = self._answered.get(call["id"])
            if answered is not None:  # sent again after a reconnect: its result was lost
                self._reply(channel, answered)
                continue
            fresh.append(call)
            if call.get("held"):
                self._held.add(call["id"])
            self._emit(parent_id, ToolCallStarted(call["id"], call["tool"], call["arguments"]))
        waiting: dict[int, PendingApproval] = {}
        granted: set[int] = set()
        reasons = {call["id"]: self._approval_reason(registry, call) for call in fresh}
        if any(reason is not None for reason in reasons.values()):
            waiting, granted = self._ask(fresh, reasons, parent_id)
        loop = asyncio.get_running_loop()
        for call in fresh:
            call_id = call["id"]
            task = self.tasks[call_id] = loop.create_task(
                self._run(
                    registry,
                    call,
                    channel,
                    parent_id,
                    waiting.get(call_id),
                    RUN_GRANT if call_id in granted else None,
                )
            )
            task.add_done_callback(
                functools.partial(self._never_ran, call, parent_id, waiting.get(call_id))
            )

    def _never_ran(
        self,
        call: CallRequest,
        parent_id: str | None,
        waiting: PendingApproval | None,
        task: asyncio.Task[None],
    ) -> None:
        """A call cancelled before its task took a step (its ``finally`` never ran):
        forget it, and record it as cancelled."""
        call_id = call["id"]
        if self.tasks.get(call_id) is not task:
            return  # it ran, and cleaned up after itself
        self._forget(call_id)
        ended = None if waiting is None else waiting.decision
        approval = (
            _approval_record(ended.result())
            if ended is not None and ended.done() and not ended.cancelled()
            else None
        )
        record = ToolCallRecord(
            id=call_id,
            name=call["tool"],
            arguments=call["arguments"],
            ok=False,
            duration=0.0,
            error="cancelled",
            approval=approval,
        )
        self._emit(parent_id, ToolCallFinished(record))

    def _forget(self, call_id: int) -> None:
        self.tasks.pop(call_id, None)
        self._cancel_reasons.pop(call_id, None)
        self._notices.pop(call_id, None)  # it ends: no notice about it is news
        self._queued.discard(call_id)
        self._acks.pop(call_id, None)
        self._held.discard(call_id)
        self.acknowledged_queued([call_id])  # nothing waits here for it now

    def _ask(
        self, calls: list[CallRequest], reasons: dict[int, str | None], run_id: str | None
    ) -> tuple[dict[int, PendingApproval], set[int]]:
        """Ask about the calls that need approval, as one batch, but those an earlier
        ``allow_for_run`` covers. Returns the requests by call id, and the covered ids."""
        granted = {
            call["id"]
            for call in calls
            if reasons[call["id"]] is not None and self.gate.granted(run_id, call["tool"])
        }
        asking = [
            (call, reason)
            for call in calls
            if (reason := reasons[call["id"]]) is not None and call["id"] not in granted
        ]
        batch = tuple(call["id"] for call, _ in asking)
        requests = [
            ApprovalRequest(call["id"], run_id, call["tool"], call["arguments"], reason, batch)
            for call, reason in asking
        ]
        asked = self.gate.ask(requests)
        return {pending.request.call_id: pending for pending in asked}, granted

    def _approval_reason(self, registry: ToolRegistry, call: CallRequest) -> str | None:
        tool = registry.get(call["tool"])
        if tool is None:
            return None  # no such tool: the call fails without running anything
        return self.gate.reason_for(call["tool"], call["arguments"], tool.requires_approval)

    def cancel(self, call_ids: list[int], reason: CancelReason = "interrupt") -> None:
        """Cancel these calls (the code waiting for them gave up, for ``reason``)."""
        for call_id in call_ids:
            task = self.tasks.get(call_id)
            if task is not None:
                self._cancel_reasons.setdefault(call_id, reason)
                self.gate.cancel(call_id, reason)  # at once: it no longer waits
                task.cancel()

    def cancel_all(self, reason: CancelReason = "cancelled") -> None:
        self.cancel(list(self.tasks), reason)

    def cancel_approvals(self, run_id: str | None, reason: CancelReason) -> None:
        """Cancel the calls of this run that wait for a decision."""
        self.cancel(self.gate.waiting_in(run_id), reason)

    # -- what the gate says (an ``ApprovalListener``) ----------------------------------

    def requested(self, request: ApprovalRequest) -> None:
        self._emit(request.run_id, ApprovalRequested(request))

    def decided(self, request: ApprovalRequest, decision: Decision) -> None:
        assert decision.approval is not None and decision.decided_by is not None
        self._emit(
            request.run_id,
            ApprovalDecided(request, decision.approval, decision.decided_by, decision.waited),
        )

    def cancelled(self, request: ApprovalRequest, decision: Decision) -> None:
        assert decision.cancelled is not None
        self._emit(request.run_id, ApprovalCancelled(request, decision.cancelled))

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
        call: CallRequest,
        channel: Channel,
        parent_id: str | None,
        waiting: PendingApproval | None,
        approval: ApprovalRecord | None,
    ) -> None:
        if not tracing.ENABLED:
            await self._serve(registry, call, channel, parent_id, waiting, approval, None)
            return
        span, token = tracing.start_tool_call(call, parent_id, self.trace_content)
        traced = _Traced()
        try:
            await self._serve(registry, call, channel, parent_id, waiting, approval, traced)
        finally:
            tracing.end_tool_call(
                span,
                token,
                error_type=traced.error_type,
                message=traced.message,
                result_json=traced.result_json if self.trace_content else None,
            )

    async def _serve(
        self,
        registry: ToolRegistry,
        call: CallRequest,
        channel: Channel,
        parent_id: str | None,
        waiting: PendingApproval | None,
        approval: ApprovalRecord | None,
        traced: _Traced | None,
    ) -> None:
        """Run one call (once approved, if it needs approval) and answer it; ``traced``,
        if given, learns how it ended (for its span)."""
        serving.set(self._owner)
        call_id, name, arguments = call["id"], call["tool"], call["arguments"]
        started = time.perf_counter()
        try:
            outcome: Outcome | None = None
            if waiting is not None:
                if not waiting.decision.done():
                    self._notice("queued", channel, call_id)  # its clock stops meanwhile
                decision = await waiting.decision
                approval = _approval_record(decision)
                if not decision.allowed:
                    assert decision.approval is not None
                    message = decision.approval.message or "denied"
                    outcome = failure("denied", "ToolDeniedError", message)
                else:
                    ready = self._start(call, channel)
                    if ready is not None:
                        await ready
            if outcome is None:
                outcome = await registry.call(
                    name,
                    arguments,
                    self.threads,
                    on_queued=lambda: self._notice("queued", channel, call_id),
                    on_started=lambda: self._start(call, channel),
                )
        except asyncio.CancelledError:
            reason = self._cancel_reasons.get(call_id, "cancelled")
            if waiting is not None and approval is None:
                ended = waiting.decision
                cancelled = (
                    ended.result()
                    if ended.done() and not ended.cancelled()
                    else self.gate.cancel(call_id, reason)
                )
                if cancelled is not None:
                    approval = _approval_record(cancelled)
            record = ToolCallRecord(
                id=call_id,
                name=name,
                arguments=arguments,
                ok=False,
                duration=time.perf_counter() - started,
                error="cancelled",
                approval=approval,
            )
            if traced is not None:
                traced.cancelled(reason)
            self._emit(parent_id, ToolCallFinished(record))
            raise
        finally:
            self._forget(call_id)
        if traced is not None:
            traced.outcome(outcome)
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
            approval=approval,
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
        """Tell the kernel a call waits (for a thread, for approval), or runs now.
        Batched per turn: only the last notice of a turn about a call counts, and only
        if it changes what the kernel knows (``queued`` then ``started`` in one turn,
        as for an approver that answers at once, sends nothing)."""
        self._notices[call_id] = (kind, channel)
        self._schedule_flush()

    def _start(self, call: CallRequest, channel: Channel) -> asyncio.Future[None] | None:
        """Tell the kernel a call that waited runs now. A held call (a resumable run's)
        the kernel was told waits must not run before the kernel counts it as started:
        until then, should this host die, the kernel sends it to the next host, which
        runs it. Returns the future of that ack, for such a call."""
        call_id = call["id"]
        ready: asyncio.Future[None] | None = None
        if call.get("held") and call_id in self._queued:
            ready = asyncio.get_running_loop().create_future()
            self._acks[call_id] = (ready, channel)
        self.acknowledged_queued([call_id])  # no longer waits: its start says more
        self._notice("started", channel, call_id)
        return ready

    def acknowledged(self, call_ids: list[int]) -> None:
        """The kernel counts these held calls as started: they run now."""
        for call_id in call_ids:
            ready, _ = self._acks.pop(call_id, (None, None))
            if ready is not None and not ready.done():
                ready.set_result(None)

    def acknowledged_queued(self, call_ids: list[int]) -> None:
        """The kernel counts these held calls as waiting here (it would send them to
        the next host, should this one go)."""
        for call_id in call_ids:
            known, _ = self._queue_acks.pop(call_id, (None, None))
            if known is not None and not known.done():
                known.set_result(None)

    async def confirm_waiting(self) -> None:
        """Until the kernel has acknowledged every held call that waits here (for an
        approval, a thread) as waiting: this host may go from then on, and they go
        to the next host."""
        while True:
            await asyncio.sleep(0)  # calls just sent take their first step, notices leave
            unsent = any(
                request.call_id in self._held and request.call_id not in self._queued
                for request in self.gate.pending
            )
            if not (unsent or self._flush_scheduled):
                break
        await asyncio.gather(*(known for known, _ in self._queue_acks.values()))

    def ask_acks_again(self) -> None:
        """Ask again for the acks not come yet (a dropped connection, or a server's
        iopub rate limit, may have lost them; the kernel acks again what it knows)."""
        pending: list[tuple[Notice, dict[int, tuple[asyncio.Future[None], Channel]]]] = [
            ("queued", self._queue_acks),
            ("started", self._acks),
        ]
        for kind, acks in pending:
            by_channel: dict[Channel, list[int]] = {}
            for call_id, (_, channel) in acks.items():
                if kind == "started" or call_id in self._queued:
                    by_channel.setdefault(channel, []).append(call_id)
            for channel, ids in by_channel.items():
                self._send(channel, pack(kind, {"ids": ids, "ack": True}))

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
        news: dict[tuple[Notice, Channel, bool], list[int]] = {}
        for call_id, (kind, channel) in notices.items():
            queued = kind == "queued"
            if queued == (call_id in self._queued):
                continue  # the kernel knows already
            if queued:
                self._queued.add(call_id)
            else:
                self._queued.discard(call_id)
            ack = call_id in self._acks if not queued else call_id in self._held
            if queued and ack:
                known = asyncio.get_running_loop().create_future()
                self._queue_acks[call_id] = (known, channel)
            news.setdefault((kind, channel, ack), []).append(call_id)
        for (kind, channel, ack), ids in news.items():
            self._send(channel, pack(kind, {"ids": ids, "ack": True} if ack else {"ids": ids}))
        for channel, entries in self._outbox.items():
            if entries:
                self._outbox[channel] = []
                self._send_results(channel, entries)

    def _send_results(self, channel: Channel, entries: list[bytes]) -> None:
        self._send(channel, pack("results", b'{"results":[%s]}' % b",".join(entries)))


def _approval_record(decision: Decision) -> ApprovalRecord:
    """What the call's record says of how its request ended."""
    approval = decision.approval
    if decision.cancelled is not None and approval is None:
        return ApprovalRecord(
            asked=True,
            decision="cancelled",
            decided_by=None,
            waited=decision.waited,
            message=decision.cancelled,
        )
    assert approval is not None and approval.decision != "later"
    return ApprovalRecord(
        asked=True,
        decision=approval.decision,
        decided_by=decision.decided_by,
        waited=decision.waited,
        message=approval.message,
    )


class _Traced:
    """How a traced call ended, for its span: the error's type and message, or the
    result's JSON."""

    __slots__ = ("error_type", "message", "result_json")

    def __init__(self) -> None:
        self.error_type: str | None = None
        self.message = ""
        self.result_json: bytes | None = None

    def outcome(self, outcome: Outcome) -> None:
        if outcome.error is None:
            self.result_json = outcome.value_json
        else:
            self.error_type = outcome.error["type"]
            self.message = outcome.error["message"]

    def cancelled(self, reason: CancelReason) -> None:
        # The kernel's tool-call timeout ends the call as the kernel's code sees it.
        self.error_type = "TimeoutError" if reason == "timeout" else "cancelled"
        self.message = f"the call was cancelled ({reason})"
