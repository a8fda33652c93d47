"""What ``AsyncProgtcClient.execute_code`` returns, with the names progtc users know.

::

    match result.type:
        case MessageType.SUCCESS: print(result.stdout, result.stderr)
        case MessageType.ERROR:   print(result.message, result.code)

Beyond progtc: ``outputs`` (display data: charts, tables, images), ``tool_calls``
(one record per call) and ``duration`` on both; ``traceback`` on errors; and one more
error code, ``ErrorCode.KERNEL_DIED``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, JsonValue

from ..host.results import Output, ToolCallRecord

__all__ = [
    "DeterminismMode",
    "ErrorCode",
    "ExecuteCodeError",
    "ExecuteCodeResult",
    "ExecuteCodeStepEnd",
    "ExecuteCodeStepMessage",
    "ExecuteCodeStepToolCalls",
    "ExecuteCodeSuccess",
    "MessageType",
    "Output",
    "StepToolCall",
    "ToolCallRecord",
]


class MessageType(str, Enum):
    """Which of the two results it is."""

    SUCCESS = "success"
    ERROR = "error"


class ErrorCode(str, Enum):
    """Why an execution failed."""

    CODE_COMPILATION_ERROR = "code_compilation_error"
    """The code is not valid Python: nothing ran."""
    CODE_RUNTIME_ERROR = "code_runtime_error"
    """The code raised (a tool's failure it did not catch, too)."""
    CODE_TIMEOUT_ERROR = "code_timeout_error"
    """The code ran past its timeout and was interrupted; its output so far is kept."""
    KERNEL_DIED = "kernel_died"
    """The kernel process died while running the code (it ran out of memory, say)."""


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)

    stdout: str = ""
    stderr: str = ""
    outputs: list[Output] = []
    tool_calls: list[ToolCallRecord] = []
    duration: float = 0.0
    """Seconds the code ran."""


class ExecuteCodeSuccess(_Result):
    """The code ran to its end."""

    type: Literal[MessageType.SUCCESS] = MessageType.SUCCESS


class ExecuteCodeError(_Result):
    """The code failed: ``code`` says how, ``message`` is the error itself."""

    type: Literal[MessageType.ERROR] = MessageType.ERROR
    code: ErrorCode
    message: str
    traceback: str = ""
    """The error's traceback, plain text (it also ends ``stderr``, as in progtc)."""


ExecuteCodeResult = ExecuteCodeSuccess | ExecuteCodeError


# -- progtc 0.2's step API (``execute_code_step``) ----------------------------------------


class DeterminismMode(str, Enum):
    """How a replayed step checks the calls it replays against the recorded ones."""

    STRICT = "strict"
    """The same tool, with the same arguments."""
    ORDER_ONLY = "order_only"
    """The same tool; its arguments may differ."""


class StepToolCall(BaseModel):
    """A tool call a step returns: run it, and send its result with the next step.

    Attributes:
        type: Always ``"tool_call"``.
        id: The call's id.
        execution_id: The run's id.
        tool_name: The tool to call.
        args: Its positional arguments.
        kwargs: Its keyword arguments.
        frame_id: The task that made it: a path of task creations from the code's own.
        call_index: How many calls that task made before this one.
    """

    type: Literal["tool_call"] = "tool_call"
    id: str
    execution_id: str
    tool_name: str
    args: tuple[JsonValue, ...] = ()
    kwargs: dict[str, JsonValue] = {}
    frame_id: tuple[int, ...] = ()
    call_index: int = 0

    @property
    def call_key(self) -> str:
        """The call's place in the code, as progtc names it (``"0.1#2"``)."""
        return f"{'.'.join(map(str, self.frame_id))}#{self.call_index}"


class ExecuteCodeStepToolCalls(BaseModel):
    """A step that stopped at tool calls: run them all, then send the next step with
    ``state`` and their results, in this order.

    Attributes:
        type: Always ``"tool_call"``.
        tool_calls: The calls to make.
        state: The run's state, for the next step (opaque).
    """

    type: Literal["tool_call"] = "tool_call"
    tool_calls: list[StepToolCall]
    state: str


class ExecuteCodeStepEnd(BaseModel):
    """How a step run ended, as progtc 0.2 says it.

    Attributes:
        type: ``"success"``, ``"syntax_error"``, ``"runtime_error"``, ``"timeout_error"``
            or ``"determinism_error"`` (a replayed call was not the recorded one).
        stdout: What the code printed.
        stderr: What it wrote to stderr, its traceback included.
    """

    type: Literal["success", "syntax_error", "runtime_error", "timeout_error", "determinism_error"]
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        """The code ran to its end."""
        return self.type == "success"


ExecuteCodeStepMessage = ExecuteCodeStepToolCalls | ExecuteCodeStepEnd
"""What ``execute_code_step`` returns."""


def step_message(answer: Any) -> ExecuteCodeStepMessage:
    """A step's answer, as the server sent it."""
    if isinstance(answer, dict) and answer.get("type") == "tool_call":
        return ExecuteCodeStepToolCalls.model_validate(answer)
    return ExecuteCodeStepEnd.model_validate(answer)
