"""progtc's result types, where progtc users import them: ``from progtc_kernel.types
import ErrorCode, ExecuteCodeSuccess, MessageType``."""

from .progtc.types import (
    DeterminismMode,
    ErrorCode,
    ExecuteCodeError,
    ExecuteCodeResult,
    ExecuteCodeStepEnd,
    ExecuteCodeStepMessage,
    ExecuteCodeStepToolCalls,
    ExecuteCodeSuccess,
    MessageType,
    Output,
    StepToolCall,
    ToolCallRecord,
)

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
