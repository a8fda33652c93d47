"""Every exception progtc_kernel raises.

    ProgtcKernelError                 base of everything below
    ├── ToolError                     in kernel code: a tool call failed on the host
    │   ├── ToolArgumentError         the arguments did not fit the tool's signature
    │   ├── ToolTimeoutError          no reply within the per-call timeout (also a TimeoutError)
    │   └── HostDisconnectedError     the host closed or restarted while the call was pending
    ├── ToolDefinitionError           on the host: a callable cannot be served as a tool
    ├── KernelError                   on the host: the kernel side is not usable
    │   ├── ExtensionNotLoadedError   the kernel has no progtc_kernel extension
    │   ├── ProtocolMismatchError     host and kernel speak different protocol versions
    │   └── KernelDiedError           the kernel process died or stopped answering
    └── ExecutionError                raised by ExecutionResult.raise_for_error()

Kernel code sees the ``ToolError`` branch (importable as ``tools.ToolError``); the
host sees the rest. Builtin ``TimeoutError`` catches ``ToolTimeoutError`` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .host.results import ExecutionResult


class ProgtcKernelError(Exception):
    """Base class of every progtc_kernel error."""


class ToolError(ProgtcKernelError):
    """A tool call failed. Raised inside kernel code; catch it to recover."""

    def __init__(self, tool: str, error_type: str, message: str) -> None:
        super().__init__(f"tool {tool!r} failed: {error_type}: {message}")
        self.tool = tool
        self.error_type = error_type
        self.message = message


class ToolArgumentError(ToolError, TypeError):
    """The arguments given to a tool do not match its signature or types."""


class ToolTimeoutError(ToolError, TimeoutError):
    """The host gave no reply within the per-call timeout."""


class HostDisconnectedError(ToolError, ConnectionError):
    """The host closed its connection while the call was pending."""


class ToolDefinitionError(ProgtcKernelError, TypeError):
    """A host callable cannot be offered as a tool (bad name, unsupported types...)."""


class KernelError(ProgtcKernelError):
    """The kernel cannot serve tool calls."""


class ExtensionNotLoadedError(KernelError):
    """The kernel did not load the progtc_kernel extension."""


class ProtocolMismatchError(KernelError):
    """Host and kernel run incompatible progtc_kernel versions."""


class KernelDiedError(KernelError):
    """The kernel process died or stopped answering."""


class ExecutionError(ProgtcKernelError):
    """Code run in the kernel ended with an error (see ``ExecutionResult.error``)."""

    def __init__(self, result: ExecutionResult) -> None:
        error = result.error
        summary = f"{error.kind}: {error.ename}: {error.evalue}" if error else "unknown error"
        super().__init__(summary)
        self.result = result
