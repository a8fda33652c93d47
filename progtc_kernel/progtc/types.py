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
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..host.results import Output, ToolCallRecord

__all__ = [
    "ErrorCode",
    "ExecuteCodeError",
    "ExecuteCodeResult",
    "ExecuteCodeSuccess",
    "MessageType",
    "Output",
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
