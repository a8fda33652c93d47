"""What an execution returns: output, errors and the tool calls it made."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..exceptions import ExecutionError

ErrorKind = Literal["syntax", "runtime", "timeout", "cancelled", "kernel_died"]


class Output(BaseModel):
    """A rich output: display data or the value of the cell's last expression.

    Attributes:
        kind: ``"display_data"`` (``display(...)``, a plot) or ``"execute_result"`` (the
            cell's last value).
        data: The MIME bundle: ``{"text/plain": ..., "image/png": <base64>, ...}``.
        metadata: The output's metadata (an image's size, say).
        display_id: The id ``display(..., display_id=True)`` gave it, if any; an update
            of that display replaces it.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["display_data", "execute_result"]
    data: dict[str, Any]
    """The mime bundle: ``{"text/plain": ..., "image/png": <base64>, "text/html": ...}``."""
    metadata: dict[str, Any] = {}
    display_id: str | None = None

    @property
    def text(self) -> str:
        return str(self.data.get("text/plain", ""))


class RunError(BaseModel):
    """Why an execution did not succeed.

    Attributes:
        kind: ``"syntax"`` (it did not compile), ``"runtime"`` (an exception escaped the
            code), ``"timeout"`` (interrupted at its timeout), ``"cancelled"``
            (interrupted) or ``"kernel_died"``.
        ename: The exception's class name.
        evalue: The exception's message.
        traceback: The traceback as plain text: the user's frames, no colour codes.
    """

    model_config = ConfigDict(frozen=True)

    kind: ErrorKind
    ename: str
    evalue: str
    traceback: str = ""
    """The traceback as plain text: user code frames, no ANSI colour codes."""


class ApprovalRecord(BaseModel):
    """How a call that needed approval was decided.

    Attributes:
        asked: Whether anyone was asked (``False``: an earlier ``allow_for_run`` of
            this tool in this run covered it).
        decision: ``"allow"``, ``"deny"``, ``"allow_for_run"``, or ``"cancelled"``
            (the run was interrupted, timed out or left while the call waited).
        decided_by: ``"approver"`` (its answer), ``"decide"`` (a ``decide`` call),
            ``"run_grant"`` (an earlier ``allow_for_run``), ``"timeout"`` (no decision
            within ``Timeout.approval``: denied), or ``None`` when cancelled.
        waited: Seconds the call waited for the decision.
        message: The denial's message; for a cancelled request, why it was cancelled.
    """

    model_config = ConfigDict(frozen=True)

    asked: bool
    decision: Literal["allow", "deny", "allow_for_run", "cancelled"]
    decided_by: Literal["approver", "decide", "run_grant", "timeout"] | None
    waited: float = 0.0
    message: str | None = None


class ToolCallRecord(BaseModel):
    """One tool call made by the code, as the host served it.

    Attributes:
        id: The call's id, as the kernel numbered it.
        name: The tool's name.
        arguments: The arguments, by parameter name.
        ok: Whether the tool returned a valid result.
        duration: Seconds from the call's arrival on the host to its result.
        error: Why it failed (``"ValueError: ..."``), when it did.
        approval: How its approval was decided; ``None`` when it needed none.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    arguments: dict[str, Any]
    ok: bool
    duration: float
    """Seconds from the call's arrival on the host to its result."""
    error: str | None = None
    approval: ApprovalRecord | None = None


class ExecutionResult(BaseModel):
    """The outcome of ``ToolKernel.execute``.

    Attributes:
        ok: The code ran to its end without an error.
        stdout: What the code printed.
        stderr: What it wrote to stderr.
        outputs: Rich outputs (``display(...)``, plots, the last value), in order.
        error: Why it did not succeed (``None`` when ``ok``).
        tool_calls: The tool calls it made.
        duration: Seconds the run took.
        execution_count: The kernel's execution counter for the run.
        output_dropped: A Jupyter Server dropped some output past its rate limits.
        run_id: The msg_id of the run's execute_request (``ApprovalRequest.run_id``).
    """

    model_config = ConfigDict(frozen=True)

    ok: bool
    stdout: str = ""
    stderr: str = ""
    outputs: list[Output] = []
    error: RunError | None = None
    tool_calls: list[ToolCallRecord] = []
    duration: float = 0.0
    execution_count: int | None = None
    output_dropped: bool = False
    """A Jupyter Server dropped some of the run's output past its iopub rate limits
    (its notice, in ``stderr``, says which and how to raise them): ``stdout``,
    ``stderr`` and ``outputs`` are incomplete. Tool calls are not lost."""
    run_id: str | None = None

    def raise_for_error(self) -> ExecutionResult:
        """Raise ``ExecutionError`` if the run failed; return the result otherwise."""
        if not self.ok:
            raise ExecutionError(self)
        return self
