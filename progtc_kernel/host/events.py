"""Live events of a running execution, as yielded by ``ToolKernel.stream``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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
class ExecutionFinished:
    """Always the last event of a run.

    Attributes:
        result: The whole run's result, as ``execute()`` returns it.
        kind: ``"finished"``.
    """

    result: ExecutionResult
    kind: Literal["finished"] = "finished"


Event = StreamOutput | DisplayOutput | ToolCallStarted | ToolCallFinished | ExecutionFinished
