"""Human approval of tool calls made by running code.

A tool that requires approval (declared on the tool, named in a kernel's
``requires_approval``, or picked by a predicate over its arguments) is not run until
someone decides: the approver callback, or a ``decide`` call from anywhere that holds
the kernel. The code meanwhile simply waits, its state intact; a denial reaches it as
``tools.ToolDeniedError`` (a ``PermissionError``).

::

    async def approve(request: ApprovalRequest) -> Approval:
        if request.arguments["amount"] > 100:
            return Approval.deny("over budget")
        return Approval.allow()

    async with ToolKernel(tools=[pay], approve=approve, requires_approval={"pay"}) as kernel:
        ...

``ApprovalGate`` is the host's side of it: the policy, the approver, the requests
waiting for a decision and the ``allow_for_run`` grants of each run. The bridge's
call server asks it before a tool runs (``host/serving.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

__all__ = [
    "Approval",
    "ApprovalGate",
    "ApprovalListener",
    "ApprovalRequest",
    "Approver",
    "CancelReason",
    "DecidedBy",
    "Decision",
    "PendingApproval",
    "RequiresApproval",
]

log = logging.getLogger("progtc_kernel")

DecisionKind = Literal["allow", "deny", "allow_for_run", "later"]
DecidedBy = Literal["approver", "decide", "run_grant", "timeout"]
# Why a request ended without a decision.
CancelReason = Literal["interrupt", "timeout", "cancelled", "approval_timeout", "host_closed"]
DEFAULT_DENIAL = "no reason given"


@dataclass(frozen=True)
class Approval:
    """An approver's answer to an ``ApprovalRequest``.

    Make one with ``Approval.allow()``, ``Approval.deny(message)``,
    ``Approval.allow_for_run()`` or ``Approval.later()``.

    Attributes:
        decision: ``"allow"`` (run this call), ``"deny"`` (the code gets
            ``ToolDeniedError`` with the message), ``"allow_for_run"`` (run this call
            and every later call of this tool in the same run without asking; each is
            still recorded) or ``"later"`` (no answer yet: the call waits until
            ``decide`` is called for it).
        message: The denial's message, which the code sees.
    """

    decision: DecisionKind
    message: str | None = None

    @classmethod
    def allow(cls) -> Approval:
        """Run the call."""
        return cls("allow")

    @classmethod
    def deny(cls, message: str = DEFAULT_DENIAL) -> Approval:
        """Do not run the call: the code gets ``ToolDeniedError`` carrying ``message``.

        Args:
            message: Why, in words the code (and a model reading its error) understands.
        """
        return cls("deny", str(message))

    @classmethod
    def allow_for_run(cls) -> Approval:
        """Run this call, and the rest of this run's calls of the same tool unasked."""
        return cls("allow_for_run")

    @classmethod
    def later(cls) -> Approval:
        """No decision yet: the call waits until ``decide(call_id, ...)`` is called."""
        return cls("later")


@dataclass(frozen=True)
class ApprovalRequest:
    """A call that waits for a decision.

    Attributes:
        call_id: The call's id (what ``decide`` takes).
        run_id: The msg_id of the execute_request whose code made the call
            (``ExecutionResult.run_id``); ``None`` when the kernel did not say.
        tool: The tool's name.
        arguments: The arguments, by parameter name.
        reason: Why the call needs approval, in words.
        batch: The ids of the calls that arrived together and need approval (an
            ``asyncio.gather``'s), this one included.
    """

    call_id: int
    run_id: str | None
    tool: str
    arguments: dict[str, Any]
    reason: str
    batch: tuple[int, ...] = ()


# Called for each request; returns the decision, or an awaitable of it.
Approver: TypeAlias = Callable[[ApprovalRequest], Awaitable[Approval] | Approval]
# Which calls need approval: ``True`` every call, a collection of tool names, or a
# predicate over (tool name, arguments). Tools may also require it themselves.
RequiresApproval: TypeAlias = bool | Collection[str] | Callable[[str, dict[str, Any]], bool] | None


@dataclass(frozen=True)
class Decision:
    """How a request ended: decided (``approval``), or cancelled (``cancelled``)."""

    approval: Approval | None
    decided_by: DecidedBy | None
    waited: float
    cancelled: CancelReason | None = None

    @property
    def allowed(self) -> bool:
        return self.approval is not None and self.approval.decision in ("allow", "allow_for_run")


class ApprovalListener(Protocol):
    """What the gate tells as requests come and go (the call server emits events)."""

    def requested(self, request: ApprovalRequest) -> None: ...

    def decided(self, request: ApprovalRequest, decision: Decision) -> None: ...

    def cancelled(self, request: ApprovalRequest, decision: Decision) -> None: ...


@dataclass(eq=False)
class PendingApproval:
    """A request waiting for its decision."""

    request: ApprovalRequest
    decision: asyncio.Future[Decision]
    since: float = field(default_factory=time.perf_counter)
    asking: asyncio.Task[None] | None = None  # the approver, awaited
    timer: asyncio.TimerHandle | None = None  # the approval timeout


class ApprovalGate:
    """The approval policy of one bridge, its approver, its waiting requests and the
    ``allow_for_run`` grants of each run.

    Args:
        approve: Called for each request (sync or async); ``None``: requests wait
            for ``decide``.
        requires_approval: Which calls need approval besides those whose tool
            requires it (see ``RequiresApproval``).
        timeout: Seconds a request may wait for a decision before the call is
            denied (``None``: no limit).
        listener: Told of each request, decision and cancellation.

    Raises:
        TypeError: ``requires_approval`` or ``approve`` is of no usable kind; the
            message names the fix.
    """

    def __init__(
        self,
        approve: Approver | None = None,
        requires_approval: RequiresApproval = None,
        *,
        timeout: float | None = None,
        listener: ApprovalListener | None = None,
    ) -> None:
        if approve is not None and not callable(approve):
            raise TypeError(
                f"approve={approve!r} is not callable: give a function that takes an "
                "ApprovalRequest and returns an Approval (async or not)"
            )
        self.approve = approve
        self.policy = _checked_policy(requires_approval)
        self.timeout = timeout
        self.listener = listener
        self._pending: dict[int, PendingApproval] = {}
        self._grants: set[tuple[str, str]] = set()  # (run id, tool) allowed for the run

    # -- the policy ---------------------------------------------------------------------

    def reason_for(self, tool: str, arguments: dict[str, Any], declared: bool) -> str | None:
        """Why this call needs approval, or None if it does not.

        Args:
            tool: The tool's name.
            arguments: The call's arguments.
            declared: The tool itself requires approval.
        """
        policy = self.policy
        if declared:
            return f"{tool} requires approval (declared on the tool)"
        if policy is True:
            return "requires_approval=True: every call needs approval"
        if callable(policy):
            try:
                needed = policy(tool, arguments)
            except Exception as exc:  # a broken predicate must not let calls through
                return (
                    f"requires_approval(tool, arguments) raised {type(exc).__name__}: {exc}; "
                    "asking to be safe"
                )
            return "requires_approval(tool, arguments) said so" if needed else None
        if policy and tool in policy:
            return f"{tool} is in requires_approval"
        return None

    def tools_asking(self, tools: Iterable[tuple[str, bool]]) -> list[str]:
        """The names of the tools whose calls may need approval.

        Args:
            tools: Each tool's name, and whether it requires approval itself.
        """
        policy = self.policy
        return sorted(
            name
            for name, declared in tools
            if declared or policy is True or callable(policy) or (policy and name in policy)
        )

    def granted(self, run_id: str | None, tool: str) -> bool:
        """An earlier ``allow_for_run`` covers this tool in this run."""
        return run_id is not None and (run_id, tool) in self._grants

    # -- requests -----------------------------------------------------------------------

    @property
    def pending(self) -> list[ApprovalRequest]:
        """The requests waiting for a decision, oldest first."""
        return [pending.request for pending in self._pending.values()]

    def ask(self, requests: list[ApprovalRequest]) -> list[PendingApproval]:
        """Register these requests (one batch), tell the listener, and ask the approver
        about each. All are registered before the approver hears of the first."""
        loop = asyncio.get_running_loop()
        asked = []
        for request in requests:
            pending = PendingApproval(request, loop.create_future())
            self._pending[request.call_id] = pending
            if self.timeout is not None:
                pending.timer = loop.call_later(self.timeout, self._expire, pending, self.timeout)
            asked.append(pending)
        if self.listener is not None:
            for pending in asked:
                self.listener.requested(pending.request)
        for pending in asked:
            if not pending.decision.done():  # an earlier answer may have covered it
                self._call_approver(pending)
        return asked

    def decide(self, call_id: int, approval: Approval, decided_by: DecidedBy = "decide") -> None:
        """Decide a waiting request.

        Args:
            call_id: The request's ``call_id``.
            approval: ``Approval.allow()``, ``.deny(message)`` or ``.allow_for_run()``.
            decided_by: Who decided, for the record.

        Raises:
            ValueError: No call with this id waits for a decision (the message lists
                those that do), or ``approval`` is ``Approval.later()``.
            TypeError: ``approval`` is not an ``Approval``.
        """
        if not isinstance(approval, Approval):
            raise TypeError(
                f"decide() takes an Approval (Approval.allow(), Approval.deny(message), "
                f"Approval.allow_for_run()), not {approval!r}"
            )
        if approval.decision == "later":
            raise ValueError(
                "decide() takes a decision: Approval.allow(), Approval.deny(message) or "
                "Approval.allow_for_run(); Approval.later() is an approver's way to defer"
            )
        pending = self._pending.get(call_id)
        if pending is None:
            waiting = ", ".join(str(i) for i in self._pending) or "none"
            raise ValueError(
                f"no call {call_id!r} waits for a decision (it was decided, cancelled or "
                f"never asked about); calls waiting now: {waiting}"
            )
        self._settle(pending, approval, decided_by)

    def cancel(self, call_id: int, reason: CancelReason) -> Decision | None:
        """The call waiting for this request is gone: stop asking, tell the approver.
        Returns how the request ended, or None if it no longer waited."""
        pending = self._pending.get(call_id)
        if pending is None:
            return None
        decision = Decision(None, None, time.perf_counter() - pending.since, reason)
        self._close(pending, decision)
        if self.listener is not None:
            self.listener.cancelled(pending.request, decision)
        return decision

    def waiting_in(self, run_id: str | None) -> list[int]:
        """The ids of the calls of this run that wait for a decision."""
        return [i for i, pending in self._pending.items() if pending.request.run_id == run_id]

    def end_run(self, run_id: str | None) -> None:
        """The run ended: forget its ``allow_for_run`` grants."""
        if run_id is not None and self._grants:
            self._grants = {grant for grant in self._grants if grant[0] != run_id}

    # -- inside -------------------------------------------------------------------------

    def _call_approver(self, pending: PendingApproval) -> None:
        if self.approve is None:
            return  # it waits for decide()
        try:
            answer = self.approve(pending.request)
        except Exception as exc:  # a broken approver denies, never allows
            self._answer(pending, _failed(exc))
            return
        if inspect.isawaitable(answer):
            asking = pending.asking = asyncio.ensure_future(self._await_approver(pending, answer))
            if inspect.iscoroutine(answer):  # cancelled before it started: never awaited
                asking.add_done_callback(lambda _: answer.close())
        else:
            self._answer(pending, answer)

    async def _await_approver(self, pending: PendingApproval, answer: Awaitable[Any]) -> None:
        try:
            approval = await answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken approver denies, never allows
            approval = _failed(exc)
        pending.asking = None  # done: nothing to cancel
        self._answer(pending, approval)

    def _answer(self, pending: PendingApproval, answer: Any) -> None:
        """The approver's answer: a decision, or ``later`` (wait for ``decide``)."""
        if not isinstance(answer, Approval):
            log.warning("progtc_kernel: the approver returned %r, not an Approval", answer)
            answer = Approval.deny(
                f"the approver returned {answer!r:.80}, not an Approval; the call is denied"
            )
        if answer.decision != "later" and not pending.decision.done():
            self._settle(pending, answer, "approver")

    def _settle(self, pending: PendingApproval, approval: Approval, decided_by: DecidedBy) -> None:
        decision = Decision(approval, decided_by, time.perf_counter() - pending.since)
        self._close(pending, decision)
        if self.listener is not None:
            self.listener.decided(pending.request, decision)
        request = pending.request
        if approval.decision == "allow_for_run" and request.run_id is not None:
            self._grants.add((request.run_id, request.tool))
            for other in list(self._pending.values()):  # the same tool, waiting in this run
                if (
                    other.request.run_id == request.run_id
                    and other.request.tool == request.tool
                    and not other.decision.done()
                ):
                    self._settle(other, Approval.allow(), "run_grant")

    def _close(self, pending: PendingApproval, decision: Decision) -> None:
        """Settle the request's future, stop its timer and its approver: it no longer
        waits."""
        self._pending.pop(pending.request.call_id, None)
        if not pending.decision.done():
            pending.decision.set_result(decision)
        if pending.timer is not None:
            pending.timer.cancel()
        asking, pending.asking = pending.asking, None
        if asking is not None and asking is not asyncio.current_task():
            asking.cancel()

    def _expire(self, pending: PendingApproval, seconds: float) -> None:
        """No decision within the approval timeout: the call is denied."""
        if pending.decision.done():
            return
        approval = Approval.deny(f"no decision within {seconds:g} s (the approval timeout)")
        waited = time.perf_counter() - pending.since
        decision = Decision(approval, "timeout", waited, "approval_timeout")
        self._close(pending, decision)
        if self.listener is not None:
            self.listener.cancelled(pending.request, decision)


def _failed(exc: Exception) -> Approval:
    log.warning("progtc_kernel: the approver raised %s: %s", type(exc).__name__, exc)
    return Approval.deny(f"the approver failed ({type(exc).__name__}: {exc}); the call is denied")


def _checked_policy(policy: Any) -> Any:
    """``requires_approval`` as given, if it is of a usable kind."""
    if policy is None or policy is False:
        return None
    if policy is True or callable(policy):
        return policy
    if isinstance(policy, str):
        raise TypeError(
            f"requires_approval={policy!r} is one string; give a collection of tool names: "
            f"requires_approval={{{policy!r}}}"
        )
    if isinstance(policy, Collection) and all(isinstance(name, str) for name in policy):
        return frozenset(policy)
    raise TypeError(
        f"requires_approval={policy!r:.80}: give True (every call), a collection of tool "
        "names, or a function (tool, arguments) -> bool"
    )
