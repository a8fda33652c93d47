"""progtc_kernel: programmatic tool calling on Jupyter kernels.

Host code imports the API below; kernels load this package as an IPython extension
(``%load_ext progtc_kernel``). Names are imported on first use so that loading the
extension inside a kernel does not pull in the host side (pydantic and friends).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .approval import Approval, ApprovalRequest, Approver, RequiresApproval
    from .exceptions import (
        ExecutionError,
        ExtensionNotLoadedError,
        HostDisconnectedError,
        KernelDiedError,
        KernelError,
        KernelNotStartedError,
        KernelStartError,
        PoolError,
        PoolExhausted,
        ProgtcKernelError,
        ProtocolMismatchError,
        ReentrantExecutionError,
        ScriptError,
        ScriptTimeoutError,
        ServerError,
        ServerNotReadyError,
        ToolArgumentError,
        ToolDefinitionError,
        ToolDeniedError,
        ToolError,
        ToolTimeoutError,
        UpstreamError,
        UpstreamStartError,
    )
    from .host.bridge import ToolBridge
    from .host.events import (
        ApprovalCancelled,
        ApprovalDecided,
        ApprovalRequested,
        DisplayOutput,
        Event,
        ExecutionFinished,
        StreamOutput,
        ToolCallFinished,
        ToolCallStarted,
    )
    from .host.loading import load_tools
    from .host.results import ApprovalRecord, ExecutionResult, Output, RunError, ToolCallRecord
    from .host.sync import SyncToolKernel, run
    from .host.tool_kernel import ToolKernel
    from .host.tools import Tool, ToolRegistry
    from .integrations.nbclient import NotebookExecutionError, execute_notebook
    from .kernels.base import KernelLifecycle, KernelLike, Transport
    from .kernels.jupyter_server import JupyterServer, RemoteKernel
    from .kernels.local import LocalKernel
    from .progtc.client import AsyncProgtcClient
    from .timeouts import USE_DEFAULT, Timeout
    from .toolset import ProgrammaticToolset, ScriptOutput, ScriptResult

__all__ = [
    "USE_DEFAULT",
    "Approval",
    "ApprovalCancelled",
    "ApprovalDecided",
    "ApprovalRecord",
    "ApprovalRequest",
    "ApprovalRequested",
    "Approver",
    "AsyncProgtcClient",
    "DisplayOutput",
    "Event",
    "ExecutionError",
    "ExecutionFinished",
    "ExecutionResult",
    "ExtensionNotLoadedError",
    "HostDisconnectedError",
    "JupyterServer",
    "KernelDiedError",
    "KernelError",
    "KernelLifecycle",
    "KernelLike",
    "KernelNotStartedError",
    "KernelStartError",
    "LocalKernel",
    "NotebookExecutionError",
    "Output",
    "PoolError",
    "PoolExhausted",
    "ProgrammaticToolset",
    "ProgtcKernelError",
    "ProtocolMismatchError",
    "ReentrantExecutionError",
    "RemoteKernel",
    "RequiresApproval",
    "RunError",
    "ScriptError",
    "ScriptOutput",
    "ScriptResult",
    "ScriptTimeoutError",
    "ServerError",
    "ServerNotReadyError",
    "StreamOutput",
    "SyncToolKernel",
    "Timeout",
    "Tool",
    "ToolArgumentError",
    "ToolBridge",
    "ToolCallFinished",
    "ToolCallRecord",
    "ToolCallStarted",
    "ToolDefinitionError",
    "ToolDeniedError",
    "ToolError",
    "ToolKernel",
    "ToolRegistry",
    "ToolTimeoutError",
    "Transport",
    "UpstreamError",
    "UpstreamStartError",
    "__version__",
    "execute_notebook",
    "load_ipython_extension",
    "load_tools",
    "run",
    "unload_ipython_extension",
]

_HOMES = {
    ".host.tool_kernel": ["ToolKernel"],
    ".host.bridge": ["ToolBridge"],
    ".host.sync": ["SyncToolKernel", "run"],
    ".host.tools": ["Tool", "ToolRegistry"],
    ".host.loading": ["load_tools"],
    ".approval": ["Approval", "ApprovalRequest", "Approver", "RequiresApproval"],
    ".host.results": ["ApprovalRecord", "ExecutionResult", "Output", "RunError", "ToolCallRecord"],
    ".host.events": [
        "Event",
        "ApprovalRequested",
        "ApprovalDecided",
        "ApprovalCancelled",
        "StreamOutput",
        "DisplayOutput",
        "ToolCallStarted",
        "ToolCallFinished",
        "ExecutionFinished",
    ],
    ".exceptions": [
        "ProgtcKernelError",
        "ToolError",
        "ToolArgumentError",
        "ToolTimeoutError",
        "HostDisconnectedError",
        "ToolDeniedError",
        "ToolDefinitionError",
        "KernelError",
        "KernelStartError",
        "KernelNotStartedError",
        "ExtensionNotLoadedError",
        "ProtocolMismatchError",
        "KernelDiedError",
        "ReentrantExecutionError",
        "ServerError",
        "ServerNotReadyError",
        "ExecutionError",
        "ScriptError",
        "ScriptTimeoutError",
        "PoolError",
        "PoolExhausted",
        "UpstreamError",
        "UpstreamStartError",
    ],
    ".kernels.base": ["KernelLifecycle", "KernelLike", "Transport"],
    ".kernels.local": ["LocalKernel"],
    ".kernels.jupyter_server": ["JupyterServer", "RemoteKernel"],
    ".toolset": ["ProgrammaticToolset", "ScriptOutput", "ScriptResult"],
    ".integrations.nbclient": ["execute_notebook", "NotebookExecutionError"],  # [notebook]
    ".progtc.client": ["AsyncProgtcClient"],
    ".timeouts": ["Timeout", "USE_DEFAULT"],
}
_EXPORTS = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'progtc_kernel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext progtc_kernel``: serve host tools as the ``tools`` module.

    Args:
        ipython: The kernel's IPython shell.
    """
    from .kernel_side.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext progtc_kernel``: every host is let go of (their pending
    calls fail with ``HostDisconnectedError``) and the ``tools`` module is removed.

    Args:
        ipython: The kernel's IPython shell.
    """
    from .kernel_side.extension import unload_ipython_extension as unload

    unload(ipython)
