"""Every exception progtc_kernel raises.

    ProgtcKernelError                 base of everything below
    ├── ToolError                     in kernel code: a tool call failed on the host
    │   ├── ToolArgumentError         the arguments did not fit the tool's signature
    │   ├── ToolTimeoutError          no reply within the per-call timeout (also a TimeoutError)
    │   └── HostDisconnectedError     no host is serving tools, or it left during the call
    ├── ToolDefinitionError           on the host: a callable cannot be served as a tool
    ├── KernelError                   on the host: the kernel side is not usable
    │   ├── KernelStartError          the kernel process could not start
    │   ├── ExtensionNotLoadedError   the kernel has no progtc_kernel extension
    │   ├── ProtocolMismatchError     host and kernel speak different protocol versions
    │   ├── KernelDiedError           the kernel process died or stopped answering
    │   ├── ReentrantExecutionError   a tool ran code on the kernel that is calling it
    │   └── ServerError               a Jupyter Server refused a request or did not answer
    ├── ScriptError                   a toolset script raised a non-builtin exception
    └── ExecutionError                raised by ExecutionResult.raise_for_error()

This module holds the ``ToolError`` branch: kernel code sees it (``from tools import
ToolError``), so it imports nothing. The host-side branches live in
``progtc_kernel.host.errors``; all are exported from ``progtc_kernel``. Builtin
``TimeoutError`` catches ``ToolTimeoutError`` too.
"""

from __future__ import annotations


class ProgtcKernelError(Exception):
    """Base class of every progtc_kernel error."""


class ToolError(ProgtcKernelError):
    """A tool call failed. Raised inside kernel code; catch it to recover."""

    def __init__(self, tool: str, error_type: str, message: str) -> None:
        super().__init__(f"tool {tool!r} failed: {error_type}: {message}")
        self.tool = tool
        self.error_type = error_type
        self.message = message

    def __reduce__(self) -> tuple[type[ToolError], tuple[str, str, str]]:
        return type(self), (self.tool, self.error_type, self.message)


class ToolArgumentError(ToolError, TypeError):
    """The arguments given to a tool do not match its signature or types."""


class ToolTimeoutError(ToolError, TimeoutError):
    """The host gave no reply within the per-call timeout."""


class HostDisconnectedError(ToolError, ConnectionError):
    """No host is serving tools, or the host left while the call was pending."""


# The exceptions kernel code can import from the ``tools`` module.
TOOL_EXCEPTIONS: tuple[type[ToolError], ...] = (
    ToolError,
    ToolArgumentError,
    ToolTimeoutError,
    HostDisconnectedError,
)

# Names the kernel's ``tools`` module keeps for itself, with the reason, besides
# dunder names (``__x__``, Python's own): a host refuses a tool so named when the
# tool is defined. Every other valid Python name is callable as ``tools.<name>``.
RESERVED_TOOL_NAMES: dict[str, str] = {
    exception.__name__: f"it is the exception class kernel code catches "
    f"(from tools import {exception.__name__})"
    for exception in TOOL_EXCEPTIONS
}
