"""progtc's result types, where progtc users import them: ``from progtc_kernel.types
import ErrorCode, ExecuteCodeSuccess, MessageType``."""

from .progtc.types import (
    ErrorCode,
    ExecuteCodeError,
    ExecuteCodeResult,
    ExecuteCodeSuccess,
    MessageType,
    Output,
    ToolCallRecord,
)

__all__ = [
    "ErrorCode",
    "ExecuteCodeError",
    "ExecuteCodeResult",
    "ExecuteCodeSuccess",
    "MessageType",
    "Output",
    "ToolCallRecord",
]
