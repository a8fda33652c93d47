"""Live events of a running execution, as yielded by ``ToolKernel.stream``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..approval import Approval, ApprovalRequest, CancelReason
from .results import ExecutionResult, Output, ToolCallRecord


@dataclass(frozen=True)
class StreamOutput:
    """A chunk the code wrote to stdout or stderr.

    Attributes:
        name: ``"stdout"`` or ``"stderr"``.
        text: What was written.
        kind: ``"stream"``, to tell events apart without ``isinstance``.
    """

    name: Literal["stdout", "stderr"]
    text: str
    kind: Literal["stream"] = "stream"


@dataclass(frozen=True)
class DisplayOutput:
    """A rich output: ``display(...)``, a plot, the cell's last value.

    Attributes:
        output: The MIME bundle and its metadata.
        kind: ``"display"``.
    """

    output: Output
    kind: Literal["display"] = "display"


@dataclass(frozen=True)
class ToolCallStarted:
    """The code called a tool; the host is about to run it.

    Attributes:
        id: The call's id, as the kernel numbered it (``ToolCallFinished.call.id``).
        name: The tool's name.
        arguments: The arguments, by parameter name, as the kernel sent them.
        kind: ``"tool_call_started"``.
    """

    id: int
    name: str
    arguments: dict[str, Any]
    kind: Literal["tool_call_started"] = "tool_call_started"


@dataclass(frozen=True)
class ToolCallFinished:
    """A tool call ended, well or not.

    Attributes:
        call: What happened: the tool, its arguments, ``ok``, ``duration`` and ``error``.
        kind: ``"tool_call_finished"``.
    """

    call: ToolCallRecord
    kind: Literal["tool_call_finished"] = "tool_call_finished"


@dataclass(frozen=True)
class ApprovalRequested:
    """A call waits for a decision: the approver is asked, or (without one, or when it
    said ``Approval.later()``) someone calls ``decide(request.call_id, ...)``.

    Attributes:
        request: The call: its tool, arguments, ``call_id``, ``run_id``, ``reason`` and
            the ``batch`` it came with.
        kind: ``"approval_requested"``.
    """

    request: ApprovalRequest
    kind: Literal["approval_requested"] = "approval_requested"


@dataclass(frozen=True)
class ApprovalDecided:
    """A waiting call was decided.

    Attributes:
        request: The request decided.
        approval: The decision.
        decided_by: ``"approver"``, ``"decide"`` or ``"run_grant"`` (an
            ``allow_for_run`` of the same tool decided it).
        waited: Seconds the call waited for it.
        kind: ``"approval_decided"``.
    """

    request: ApprovalRequest
    approval: Approval
    decided_by: Literal["approver", "decide", "run_grant", "timeout"]
    waited: float
    kind: Literal["approval_decided"] = "approval_decided"


@dataclass(frozen=True)
class ApprovalCancelled:
    """A request ended without a decision; the approver's task, if any, was cancelled.

    Attributes:
        request: The request.
        reason: ``"interrupt"``, ``"timeout"`` (the run's), ``"cancelled"`` (the run
            was left, or the kernel restarted), ``"approval_timeout"`` (no decision
            within ``Timeout.approval``: the call is denied) or ``"host_closed"``.
        kind: ``"approval_cancelled"``.
    """

    request: ApprovalRequest
    reason: CancelReason
    kind: Literal["approval_cancelled"] = "approval_cancelled"


@dataclass(frozen=True)
class ExecutionFinished:
    """Always the last event of a run.

    Attributes:
        result: The whole run's result, as ``execute()`` returns it.
        kind: ``"finished"``.
    """

    result: ExecutionResult
    kind: Literal["finished"] = "finished"


Event = (
    StreamOutput
    | DisplayOutput
    | ToolCallStarted
    | ToolCallFinished
    | ApprovalRequested
    | ApprovalDecided
    | ApprovalCancelled
    | ExecutionFinished
)
