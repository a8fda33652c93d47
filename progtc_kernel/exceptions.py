r"""Every exception progtc_kernel raises, in one tree (all exported from
``progtc_kernel``).

    ProgtcKernelError                 base of everything below
    ├── ToolError                     in kernel code: a tool call failed on the host
    │   ├── ToolArgumentError         the arguments did not fit the tool's signature
    │   ├── ToolTimeoutError          no reply within the per-call timeout (also a TimeoutError)
    │   ├── ToolDeniedError           the call needed approval and was denied (also a
    │   │                             PermissionError)
    │   └── HostDisconnectedError     no host is serving tools, or it left during the call
    ├── ToolDefinitionError           on the host: a callable cannot be served as a tool
    ├── KernelError                   on the host: the kernel side is not usable
    │   ├── KernelStartError          the kernel process could not start
    │   ├── KernelNotStartedError     used before it was started (also a RuntimeError)
    │   ├── ExtensionNotLoadedError   the kernel has no progtc_kernel extension
    │   ├── ProtocolMismatchError     host and kernel speak different protocol versions
    │   ├── KernelDiedError           the kernel process died or stopped answering
    │   ├── ReentrantExecutionError   a tool ran code on the kernel that is calling it (also
    │   │                             a RuntimeError)
    │   └── ServerError               a Jupyter Server refused a request or did not answer
    │       └── ServerNotReadyError   a server did not come up in time (also a TimeoutError)
    ├── ExecutionError                raised by ExecutionResult.raise_for_error()
    ├── ScriptError                   a toolset script raised a non-builtin exception
    ├── ScriptTimeoutError            a toolset script ran out of time (also a TimeoutError)
    ├── PoolError                     progtc-kernel serve cannot hand out a kernel
    │   └── PoolExhausted             every kernel is busy, and none came free in time
    └── UpstreamError                 an upstream MCP server's tool failed, or it is gone
        └── UpstreamStartError        an upstream MCP server did not start (also a RuntimeError)

Kernel code sees the ``ToolError`` branch (``from tools import ToolError``), and the
kernel side imports this module: it imports nothing but the standard library. Where
callers catch a builtin, the class is that builtin too (``except TimeoutError``
catches ``ToolTimeoutError`` and ``ScriptTimeoutError``; ``ToolArgumentError`` and
``ToolDefinitionError`` are also ``TypeError``; ``except PermissionError`` catches
``ToolDeniedError``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .host.results import ExecutionResult


class ProgtcKernelError(Exception):
    """Base class of every progtc_kernel error."""


# -- in kernel code: a tool call ---------------------------------------------------


class ToolError(ProgtcKernelError):
    """A tool call failed. Raised inside kernel code; catch it to recover.

    Args:
        tool: the tool's name.
        error_type: the class name of what the tool raised on the host.
        message: what it said.
    """

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


class ToolDeniedError(ToolError, PermissionError):
    """The call needed approval, and it was denied (or no decision came in time). The
    tool did not run. ``message`` is the denial's message.

    Args:
        tool: the tool's name.
        error_type: ``"ToolDeniedError"``.
        message: why it was denied, as the approver said.
    """

    def __init__(self, tool: str, error_type: str, message: str) -> None:
        super().__init__(tool, error_type, message)
        self.args = (f"tool {tool!r} was denied: {message}",)


# The exceptions kernel code can import from the ``tools`` module.
TOOL_EXCEPTIONS: tuple[type[ToolError], ...] = (
    ToolError,
    ToolArgumentError,
    ToolTimeoutError,
    HostDisconnectedError,
    ToolDeniedError,
)

# Names the kernel's ``tools`` module keeps for itself, with the reason, besides
# dunder names (``__x__``, Python's own): a host refuses a tool so named when the
# tool is defined. Every other valid Python name is callable as ``tools.<name>``.
RESERVED_TOOL_NAMES: dict[str, str] = {
    exception.__name__: f"it is the exception class kernel code catches "
    f"(from tools import {exception.__name__})"
    for exception in TOOL_EXCEPTIONS
}
RESERVED_TOOL_NAMES["catalog"] = (
    "it is the tool catalog scripts search (tools.catalog.search('words'), "
    "tools.catalog.describe('name'))"
)


# -- on the host: tools and kernels ------------------------------------------------


class ToolDefinitionError(ProgtcKernelError, TypeError):
    """A host callable cannot be offered as a tool (bad name, unsupported types...)."""


class KernelError(ProgtcKernelError):
    """The kernel cannot serve tool calls."""


class KernelStartError(KernelError):
    """The kernel process exited, or never answered, while starting."""


class KernelNotStartedError(KernelError, RuntimeError):
    """A kernel was used before it was started (``async with`` starts it)."""


class ExtensionNotLoadedError(KernelError):
    """The kernel did not load the progtc_kernel extension."""


class ProtocolMismatchError(KernelError):
    """Host and kernel run incompatible progtc_kernel versions, or the kernel refused
    this host's registration (the message says what it could not use)."""


class KernelDiedError(KernelError):
    """The kernel process died or stopped answering."""


class ReentrantExecutionError(KernelError, RuntimeError):
    """A tool tried to run code on the kernel whose code is waiting for that tool (or
    a blocking call was made from the event loop it would have to wait for)."""


class ServerError(KernelError):
    """A Jupyter Server (or gateway) refused a request, or did not answer.

    Args:
        message: what went wrong, and the fix.
        status: the HTTP status it answered with (``None``: no answer at all).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerNotReadyError(ServerError, TimeoutError):
    """A server did not answer within the time it was given to come up
    (``AsyncProgtcClient.wait_for_server``)."""


class ExecutionError(ProgtcKernelError):
    """Code run in the kernel ended with an error (see ``ExecutionResult.error``).

    Args:
        result: the run's result, kept as ``self.result``.
    """

    def __init__(self, result: ExecutionResult) -> None:
        error = result.error
        summary = f"{error.kind}: {error.ename}: {error.evalue}" if error else "unknown error"
        super().__init__(summary)
        self.result = result


# -- the agent toolset ---------------------------------------------------------------


class ScriptError(ProgtcKernelError):
    """A script run by ``ProgrammaticToolset`` raised an exception that is not one of
    Python's built-in ones (those are raised as themselves). The message starts with
    its class name, as ``ToolError: ...``.

    Args:
        type_name: the class name of what the script raised.
        message: what it said.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


class ScriptTimeoutError(ProgtcKernelError, TimeoutError):
    """A script run by ``ProgrammaticToolset`` took longer than its timeout and was
    stopped."""


# -- progtc-kernel serve -------------------------------------------------------------


class PoolError(ProgtcKernelError):
    """The pool cannot hand out a kernel: kernels fail to start (the message says why)."""


class PoolExhausted(PoolError):
    """Every kernel the server may run is busy, and none came free in time."""


# -- MCP -------------------------------------------------------------------------------


class UpstreamError(ProgtcKernelError):
    """An upstream MCP server's tool failed, or the server is gone."""


class UpstreamStartError(UpstreamError, RuntimeError):
    """An upstream MCP server could not be started, or exited before its handshake."""
