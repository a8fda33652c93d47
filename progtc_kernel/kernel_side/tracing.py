"""The trace context of the running cell (standard library only).

A host that traces its runs puts the run span's W3C ``traceparent`` in the
``execute_request``'s metadata. While that cell runs, the kernel shows it as the
``TRACEPARENT`` environment variable (the name OpenTelemetry's environment-carrier
specification gives it; subprocesses the code starts inherit it), and, where
opentelemetry is installed in the kernel, as the current context, so that spans the
code opens are the run span's children. Each tool call carries the traceparent of
the span it is made in (``CallRequest["traceparent"]``), that the host's span of the
call be that span's child.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Any

ENV = "TRACEPARENT"
METADATA_KEY = "traceparent"
_VALID = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_UNSET = object()

# The traceparent of the cell that runs now (None: the host does not trace it).
running: str | None = None


def call_traceparent() -> str | None:
    """The traceparent a tool call made here carries: that of the current span if the
    code opened one (with opentelemetry), else that of the running cell."""
    trace = sys.modules.get("opentelemetry.trace")  # never imported here for this
    if trace is not None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    return running


class CellTrace:
    """Sets the trace context of each cell before it runs, and takes it away after
    (IPython's ``pre_execute``/``post_execute`` events: silent runs have them too)."""

    def __init__(self) -> None:
        self._env_before: object = _UNSET  # TRACEPARENT before the cell set it
        self._otel: tuple[Any, Any] | bool | None = False  # False: not looked for yet
        self._context_before: Any = None

    def pre_execute(self, parent: dict[str, Any]) -> None:
        """Set the trace context of the cell that runs for request ``parent``."""
        global running
        metadata = parent.get("metadata")
        traceparent = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
        if not (isinstance(traceparent, str) and _VALID.fullmatch(traceparent)):
            traceparent = None
        running = traceparent
        if traceparent is None:
            return
        if self._env_before is _UNSET:
            self._env_before = os.environ.get(ENV)
        os.environ[ENV] = traceparent
        otel = self._opentelemetry()
        if otel is not None:
            context, propagator = otel
            self._context_before = context.get_current()
            context.attach(propagator.extract({METADATA_KEY: traceparent}))

    def post_execute(self) -> None:
        global running
        running = None
        if self._env_before is not _UNSET:
            if isinstance(self._env_before, str):
                os.environ[ENV] = self._env_before
            else:
                os.environ.pop(ENV, None)
            self._env_before = _UNSET
        otel = self._opentelemetry() if self._context_before is not None else None
        if otel is not None:
            # Set back rather than detached: an async cell ran (and attached) in a task
            # of its own, whose context this is not.
            otel[0].attach(self._context_before)
            self._context_before = None

    def _opentelemetry(self) -> tuple[Any, Any] | None:
        """opentelemetry's context module and W3C propagator, imported the first time a
        traced cell runs, if the kernel has opentelemetry; None if it has not."""
        if self._otel is False:
            self._otel = None
            if importlib.util.find_spec("opentelemetry") is not None:
                # Imported by name: a kernel need not have it, and has it only by choice.
                try:
                    context = importlib.import_module("opentelemetry.context")
                    w3c = importlib.import_module("opentelemetry.trace.propagation.tracecontext")
                except ImportError:
                    pass
                else:
                    self._otel = (context, w3c.TraceContextTextMapPropagator())
        return self._otel if isinstance(self._otel, tuple) else None
