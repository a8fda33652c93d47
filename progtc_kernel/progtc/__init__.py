"""progtc's client API on Jupyter kernels: ``AsyncProgtcClient`` and its result types.

``from progtc import AsyncProgtcClient`` becomes ``from progtc_kernel import
AsyncProgtcClient``, and ``progtc.types`` becomes ``progtc_kernel.types``.
"""

from .client import AsyncProgtcClient
from .types import ErrorCode, ExecuteCodeError, ExecuteCodeResult, ExecuteCodeSuccess, MessageType

__all__ = [
    "AsyncProgtcClient",
    "ErrorCode",
    "ExecuteCodeError",
    "ExecuteCodeResult",
    "ExecuteCodeSuccess",
    "MessageType",
]
