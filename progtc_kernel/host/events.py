"""Live events of a running execution, as yielded by ``ToolKernel.stream``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .results import ExecutionResult, Output, ToolCallRecord


@dataclass(frozen=True)
class StreamOutput:
    """A chunk the code wrote to stdout or stderr."""

    name: Literal["stdout", "stderr"]
    text: str
    kind: Literal["stream"] = "stream"


@dataclass(frozen=True)
class DisplayOutput:
    """A rich output: ``display(...)``, a plot, the cell's last value."""

    output: Output
    kind: Literal["display"] = "display"


@dataclass(frozen=True)
class ToolCallStarted:
    id: int
    name: str
    arguments: dict[str, Any]
    kind: Literal["tool_call_started"] = "tool_call_started"


@dataclass(frozen=True)
class ToolCallFinished:
    call: ToolCallRecord
    kind: Literal["tool_call_finished"] = "tool_call_finished"


@dataclass(frozen=True)
class ExecutionFinished:
    """Always the last event."""

    result: ExecutionResult
    kind: Literal["finished"] = "finished"


Event = StreamOutput | DisplayOutput | ToolCallStarted | ToolCallFinished | ExecutionFinished
