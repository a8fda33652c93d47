"""progtc's client API on Jupyter kernels: ``AsyncProgtcClient`` and its result types.

``from progtc import AsyncProgtcClient`` becomes ``from progtc_kernel import
AsyncProgtcClient``, and ``progtc.types`` becomes ``progtc_kernel.types``.
"""

from .client import AsyncProgtcClient
from .types import (
    DeterminismMode,
    ErrorCode,
    ExecuteCodeError,
    ExecuteCodeResult,
    ExecuteCodeStepEnd,
    ExecuteCodeStepToolCalls,
    ExecuteCodeSuccess,
    MessageType,
    StepToolCall,
)

__all__ = [
    "AsyncProgtcClient",
    "DeterminismMode",
    "ErrorCode",
    "ExecuteCodeError",
    "ExecuteCodeResult",
    "ExecuteCodeStepEnd",
    "ExecuteCodeStepToolCalls",
    "ExecuteCodeSuccess",
    "MessageType",
    "StepToolCall",
]
