"""Timeouts: one value object, one "use the default" sentinel, every default in one place.

Every API that waits takes ``timeout: float | Timeout | None | UseDefault``, in the
way of httpx:

- a number is the ``run`` timeout: seconds one code run may take;
- a ``Timeout`` sets each kind of wait (run, tool call, kernel start, HTTP request);
- ``None`` means **no limit**, always (never "the default");
- ``USE_DEFAULT`` means "what the level up says": the kernel's timeout for one
  ``execute``, the server's ceiling for one progtc client call, the defaults below
  for a new kernel.

::

    kernel = ToolKernel(tools, timeout=Timeout(60, tool_call=5))
    await kernel.execute(code)                  # 60 s, the kernel's
    await kernel.execute(code, timeout=None)    # no limit for this run
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Final, TypeAlias

__all__ = [
    "DEFAULT_APPROVAL",
    "DEFAULT_POOL_WAIT",
    "DEFAULT_RECONNECT",
    "DEFAULT_REMOTE_START",
    "DEFAULT_REQUEST",
    "DEFAULT_RESUME_GRACE",
    "DEFAULT_RUN",
    "DEFAULT_SCRIPT_RUN",
    "DEFAULT_SEND",
    "DEFAULT_SESSION_IDLE",
    "DEFAULT_START",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOOL_CALL",
    "MCP_TIMEOUT",
    "NOTEBOOK_TIMEOUT",
    "SCRIPT_TIMEOUT",
    "USE_DEFAULT",
    "YEAR",
    "Timeout",
    "TimeoutLike",
    "UseDefault",
    "renamed",
    "resolve",
    "run_seconds",
    "seconds",
    "with_old_keywords",
]

# Every default timeout of the package, in seconds (progtc's own for run and tool call).
DEFAULT_RUN: Final = 30.0
DEFAULT_TOOL_CALL: Final = 10.0
DEFAULT_START: Final = 60.0
DEFAULT_REQUEST: Final = 10.0
# How long a resumable run's calls wait for a new host after theirs went (minutes: a
# host process restarts, or a person comes back to answer an approval).
DEFAULT_RESUME_GRACE: Final = 600.0
# Stands for "no limit" where a library has no way to say it (tornado, nbclient).
YEAR: Final = 365 * 24 * 3600.0
# A script an agent wrote (ProgrammaticToolset, MCP): several tool calls in a row.
DEFAULT_SCRIPT_RUN: Final = 60.0
# A kernel started through a Jupyter Server: a gateway on a cluster may pull an image.
DEFAULT_REMOTE_START: Final = 120.0
# How long a request to `progtc-kernel serve` waits for a free kernel.
DEFAULT_POOL_WAIT: Final = 30.0
# `progtc-kernel serve`: a named session nobody uses for this long is ended, and a
# progtc API client that takes nothing the server sends for this long is cut off.
DEFAULT_SESSION_IDLE: Final = 600.0
DEFAULT_SEND: Final = 60.0
# How long a dropped websocket to a Jupyter Server keeps trying to come back.
DEFAULT_RECONNECT: Final = 30.0
# How long a tool call waits for a person's decision: as long as it takes.
DEFAULT_APPROVAL: Final = None


class UseDefault:
    """The type of ``USE_DEFAULT``: "take the value of the level up" (a sentinel, as
    httpx's ``USE_CLIENT_DEFAULT``; ``None`` could not say it, it means no limit)."""

    _instance: UseDefault | None = None

    def __new__(cls) -> UseDefault:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "USE_DEFAULT"

    def __reduce__(self) -> str:
        return "USE_DEFAULT"  # pickles as the module global: stays the one instance


USE_DEFAULT: Final = UseDefault()


def seconds(name: str, value: Any) -> float | None:
    """``value`` as a timeout in seconds (``None``: no limit).

    Args:
        name: how the caller spelt the timeout, for the error message.
        value: what the caller gave.

    Returns:
        The value as a float, or None.

    Raises:
        ValueError: ``value`` is not a finite number of seconds above 0 nor None
            (0, a negative number, NaN or infinity: each would be read a different way).
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{name}={value!r} is not a timeout: give a finite number of seconds above 0, "
            "or None for no limit"
        )
    return float(value)


@dataclass(frozen=True)
class Timeout:
    """How long each kind of wait may take, in seconds; ``None``: no limit.

    ``Timeout(60)`` sets the run timeout and keeps the defaults for the others;
    ``dataclasses.replace(timeout, tool_call=None)`` changes one field.

    Args:
        run: seconds one code run (``execute``, ``stream``, a script) may take before
            it is interrupted; its output so far is kept.
        tool_call: seconds one tool call may take before the code gets a
            ``ToolTimeoutError``.
        start: seconds a kernel may take to start (or restart) and load the extension.
        request: seconds one HTTP request to a Jupyter Server or progtc server may take.
        approval: seconds a tool call may wait for a person's decision before it is
            denied (default ``None``: no limit). The wait is not charged to
            ``tool_call``; ``run`` still applies, so give runs that wait for a person
            ``run=None`` or a long one.

    Raises:
        ValueError: a field is not a number of seconds above 0 nor None.
    """

    run: float | None = DEFAULT_RUN
    tool_call: float | None = DEFAULT_TOOL_CALL
    start: float | None = DEFAULT_START
    request: float | None = DEFAULT_REQUEST
    approval: float | None = DEFAULT_APPROVAL

    def __init__(
        self,
        run: float | None = DEFAULT_RUN,
        *,
        tool_call: float | None = DEFAULT_TOOL_CALL,
        start: float | None = DEFAULT_START,
        request: float | None = DEFAULT_REQUEST,
        approval: float | None = DEFAULT_APPROVAL,
    ) -> None:
        # Written out (rather than the dataclass's) so that only ``run`` is positional.
        for name, value in (
            ("run", run),
            ("tool_call", tool_call),
            ("start", start),
            ("request", request),
            ("approval", approval),
        ):
            object.__setattr__(self, name, seconds(name, value))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={_text(getattr(self, name))}"
            for name in ("run", "tool_call", "start", "request", "approval")
        )
        return f"Timeout({fields})"


DEFAULT_TIMEOUT: Final = Timeout()
# execute_notebook's and `progtc-kernel notebook`'s: a cell may run for as long as it
# needs (as nbclient's), a tool call and a start as a kernel's.
NOTEBOOK_TIMEOUT: Final = Timeout(None)
# ProgrammaticToolset's and CodeModeToolset's: a script makes several tool calls in a row.
SCRIPT_TIMEOUT: Final = Timeout(DEFAULT_SCRIPT_RUN)
# `progtc-kernel mcp`'s: scripts call upstream MCP servers, which may be slow, so a
# tool call gets as long as a script.
MCP_TIMEOUT: Final = Timeout(DEFAULT_SCRIPT_RUN, tool_call=DEFAULT_SCRIPT_RUN)

# What every API that waits accepts as ``timeout``.
TimeoutLike: TypeAlias = float | Timeout | UseDefault | None


def resolve(given: TimeoutLike, default: Timeout = DEFAULT_TIMEOUT) -> Timeout:
    """The ``Timeout`` that ``given`` means, one level below ``default``.

    Args:
        given: a ``Timeout`` (taken as it is), a number or None (the run timeout; the
            other fields are ``default``'s) or ``USE_DEFAULT`` (``default`` itself).
        default: the level up.

    Returns:
        A ``Timeout`` whose every field is a number or None.

    Raises:
        ValueError: a number that is not a timeout (see ``seconds``).
        TypeError: something that is none of these.
    """
    if isinstance(given, UseDefault):
        return default
    if isinstance(given, Timeout):
        return given
    return replace(default, run=run_seconds(given, default.run))


def run_seconds(given: TimeoutLike, default: float | None, name: str = "timeout") -> float | None:
    """The run timeout that ``given`` means: one run's own, below a kernel's.

    Args:
        given: a number or None (that), a ``Timeout`` (its ``run``) or ``USE_DEFAULT``.
        default: the level up's run timeout.
        name: how the caller spelt it, for the error message.

    Returns:
        Seconds, or None for no limit.

    Raises:
        ValueError: a number that is not a timeout.
        TypeError: something that is none of these.
    """
    if isinstance(given, UseDefault):
        return default
    if isinstance(given, Timeout):
        return given.run
    if given is not None and not isinstance(given, int | float):
        raise TypeError(
            f"{name}={given!r}: give seconds, a Timeout, None (no limit) or USE_DEFAULT"
        )
    return seconds(name, given)


def renamed(old: str, new: str, value: Any, *, stacklevel: int = 3) -> float | None:
    """The value of a deprecated timeout keyword, with a ``DeprecationWarning`` that
    names the new spelling.

    Args:
        old: the old keyword.
        new: what to write instead.
        value: what the caller gave for ``old``.
        stacklevel: how far up the caller is, from here.

    Returns:
        The value as seconds (or None).
    """
    warnings.warn(f"{old}= is deprecated: give {new}", DeprecationWarning, stacklevel=stacklevel)
    return seconds(old, value)


def with_old_keywords(
    limits: Timeout,
    *,
    tool_timeout: float | UseDefault | None = USE_DEFAULT,
    startup_timeout: float | UseDefault | None = USE_DEFAULT,
) -> Timeout:
    """``limits`` with what a caller gave under the keywords ``Timeout`` replaces
    (``USE_DEFAULT``: not given), each with a ``DeprecationWarning`` naming the field.

    Args:
        limits: the timeouts given the new way.
        tool_timeout: the old spelling of ``tool_call``.
        startup_timeout: the old spelling of ``start``.

    Returns:
        ``limits``, changed where an old keyword was given.
    """
    changes: dict[str, float | None] = {}
    for old, new, value in (
        ("tool_timeout", "tool_call", tool_timeout),
        ("startup_timeout", "start", startup_timeout),
    ):
        if not isinstance(value, UseDefault):
            # The caller is three frames up: renamed, here, the API that was called.
            changes[new] = renamed(old, f"timeout=Timeout({new}=...)", value, stacklevel=4)
    return replace(limits, **changes) if changes else limits


def _text(value: float | None) -> str:
    return "None" if value is None else f"{value:g}"
