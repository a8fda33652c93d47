"""OpenTelemetry spans for runs and the tool calls their code makes.

Tracing is on when ``opentelemetry-api`` is installed (the ``otel`` extra) and the
application sets a tracer provider, as with any library that uses OpenTelemetry.
Without the package nothing here imports it, and every function below is a cheap
no-op: callers test ``ENABLED`` once, at import.

A run's span is the child of whatever span is current where the run is asked for
(an agent run, an MCP request, a web request). Its W3C ``traceparent`` travels to
the kernel in the ``execute_request``'s metadata; the kernel sends it back with
each tool call (or that of a span the code opened there), and each call's span
(``execute_tool {name}``, the GenAI semantic conventions) is that span's child.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

try:
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed: no spans, nothing imported
    ENABLED = False
else:
    ENABLED = True
    _tracer = _trace.get_tracer("progtc_kernel", __version__)
    _w3c = TraceContextTextMapPropagator()

# The key of the execute_request's metadata (and of a CallRequest) that carries it.
TRACEPARENT = "traceparent"

# The traceparent of each run in flight, by the msg_id of its execute_request: the
# parent of a call whose kernel did not send one (an older extension's).
_run_parents: dict[str, str] = {}
_last_parent: tuple[str | None, Context | None] = (None, None)


def traceparent(span: Span) -> str | None:
    """The W3C ``traceparent`` of ``span``; None for a span that records nothing
    (no tracer provider set)."""
    carrier: dict[str, str] = {}
    _w3c.inject(carrier, context=_trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def start_run(name: str, attributes: Mapping[str, Any]) -> Span:
    """A run's span, the child of the span current here; not made current (it spans
    an async generator, whose steps run in its consumers' contexts)."""
    return _tracer.start_span(name, attributes=attributes)


def run_sent(span: Span, msg_id: str, sent_traceparent: str | None) -> None:
    """The run's execute_request left as ``msg_id``: its calls' spans nest under it."""
    span.set_attribute("progtc_kernel.run_id", msg_id)
    if sent_traceparent is not None:
        _run_parents[msg_id] = sent_traceparent


def end_run(span: Span, msg_id: str | None, error_type: str | None, message: str = "") -> None:
    if msg_id is not None:
        _run_parents.pop(msg_id, None)
    if error_type is not None:
        _failed(span, error_type, message)
    span.end()


@contextmanager
def current_span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A span made current for the block (``execute_tool_script``, ``execute_code``):
    ``error.type`` and an error status when the block raises."""
    with _tracer.start_as_current_span(
        name, attributes=attributes, record_exception=True, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as exc:
            _failed(span, type(exc).__qualname__, str(exc))
            raise


def start_tool_call(
    call: Mapping[str, Any], run_id: str | None, content: bool
) -> tuple[Span, object]:
    """A tool call's span (GenAI ``execute_tool``), made current in the calling task
    so that what the tool does nests under it; returns it and the token that
    ``end_tool_call`` detaches."""
    parent_context = None
    for parent in (call.get(TRACEPARENT), _run_parents.get(run_id or "")):
        if isinstance(parent, str):
            parent_context = _parent_context(parent)
            if parent_context is not None:
                break  # else (malformed): the run's, or the span current here
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call["tool"],
        "gen_ai.tool.call.id": str(call["id"]),
        "gen_ai.tool.type": "function",
    }
    if content:
        attributes["gen_ai.tool.call.arguments"] = json.dumps(call["arguments"])
    span = _tracer.start_span(
        f"execute_tool {call['tool']}", context=parent_context, attributes=attributes
    )
    return span, _context.attach(_trace.set_span_in_context(span))


def _parent_context(traceparent: str) -> Context | None:
    """The context a traceparent names, None for a malformed one. The calls of a run
    share it: the last one is kept."""
    global _last_parent
    if _last_parent[0] == traceparent:
        return _last_parent[1]
    context = _w3c.extract({TRACEPARENT: traceparent})
    if not _trace.get_current_span(context).get_span_context().is_valid:
        return None
    _last_parent = (traceparent, context)
    return context


def end_tool_call(
    span: Span,
    token: object,
    *,
    error_type: str | None,
    message: str = "",
    result_json: bytes | None = None,
) -> None:
    """End a tool call's span: ``error.type`` on failure, the result (opt-in) on success."""
    if error_type is not None:
        _failed(span, error_type, message)
    elif result_json is not None:
        span.set_attribute("gen_ai.tool.call.result", result_json.decode())
    span.end()
    _context.detach(token)  # type: ignore[arg-type]


def _failed(span: Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, message or None))
