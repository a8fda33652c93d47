"""Host-side exceptions: tool definitions, kernels, executions.

Their place in the whole tree is drawn at the top of ``progtc_kernel.exceptions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exceptions import ProgtcKernelError

if TYPE_CHECKING:
    from .results import ExecutionResult


class ToolDefinitionError(ProgtcKernelError, TypeError):
    """A host callable cannot be offered as a tool (bad name, unsupported types...)."""


class KernelError(ProgtcKernelError):
    """The kernel cannot serve tool calls."""


class KernelStartError(KernelError):
    """The kernel process exited, or never answered, while starting."""


class ExtensionNotLoadedError(KernelError):
    """The kernel did not load the progtc_kernel extension."""


class ProtocolMismatchError(KernelError):
    """Host and kernel run incompatible progtc_kernel versions."""


class KernelDiedError(KernelError):
    """The kernel process died or stopped answering."""


class ReentrantExecutionError(KernelError):
    """A tool tried to run code on the kernel whose code is waiting for that tool."""


class ServerError(KernelError):
    """A Jupyter Server (or gateway) refused a request, or did not answer.

    ``status`` is the HTTP status it answered with (``None``: no answer at all)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ScriptError(ProgtcKernelError):
    """A script run by ``ProgrammaticToolset`` raised an exception that is not one of
    Python's built-in ones (those are raised as themselves). ``type_name`` is its
    class name; the message starts with it, as ``ToolError: ...``."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


class ExecutionError(ProgtcKernelError):
    """Code run in the kernel ended with an error (see ``ExecutionResult.error``)."""

    def __init__(self, result: ExecutionResult) -> None:
        error = result.error
        summary = f"{error.kind}: {error.ename}: {error.evalue}" if error else "unknown error"
        super().__init__(summary)
        self.result = result
