"""The wire protocol both sides speak: typed, versioned comm messages.

Every message travels on one comm (target ``progtc_kernel``). Its comm ``data`` is
a small routing dict ``{"v": PROTOCOL_VERSION, "type": ...}`` and its first buffer
holds the body as JSON bytes, so large arguments and results skip Jupyter's
per-message JSON cleaning and are never encoded twice.

Host to kernel:  ``register`` (the comm_open), ``hello``, ``tools``, ``results``,
                 ``queued``, ``started``, ``resume``, ``close``.
Kernel to host:  ``ready``, ``calls``, ``cancelled``, ``error``.

``hello`` follows ``ready`` on the shell channel: from it the kernel learns which
connection is this host's, to notice when it closes. ``queued`` and ``started``
concern sync tools that wait for a free host thread: the kernel does not charge
that wait to ``tool_timeout``. ``resume`` follows a dropped connection that came
back (a remote kernel's websocket): the kernel sends again every call still waiting
for its result, since the call or its result may have been lost with the connection;
the host answers each call id once, replaying a result it already sent.

``error`` is the one message every version reads (a body with a ``message``), so a
host and a kernel of different versions can always tell each other so.
``PROTOCOL_VERSION`` covers the messages and what the host runs in the kernel
besides them (``kernel.modules.install``, ``kernel.script.run_script``): it changes
whenever either changes incompatibly.

This module imports nothing heavy: the kernel side loads it, and the kernel must
stay light. The host validates bodies with pydantic against these TypedDicts.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

try:  # pydantic (host side) needs typing_extensions' TypedDict before Python 3.12
    from typing_extensions import TypedDict
except ImportError:  # pragma: no cover - a kernel without typing_extensions
    from typing import TypedDict

PROTOCOL_VERSION = 2
COMM_TARGET = "progtc_kernel"
HOST_CLOSED = "the host closed the connection"

Channel = Literal["shell", "control"]
ParameterKind = Literal[
    "positional_only", "positional_or_keyword", "var_positional", "keyword_only", "var_keyword"
]
ErrorKind = Literal["tool", "arguments", "unknown_tool", "result", "cancelled"]
CancelReason = Literal["interrupt", "timeout", "cancelled"]

HostMessageType = Literal[
    "register", "hello", "tools", "results", "queued", "started", "resume", "close"
]
KernelMessageType = Literal["ready", "calls", "cancelled", "error"]


class ParameterSpec(TypedDict):
    name: str
    kind: ParameterKind
    annotation: str | None
    default_repr: str | None  # None: the parameter has no default


class ToolSpec(TypedDict):
    name: str
    description: str | None
    parameters: list[ParameterSpec]
    returns: str | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None


class RegisterBody(TypedDict):
    """Sent with the comm_open, and again as ``tools`` whenever the set changes."""

    tools: list[ToolSpec]
    tool_timeout: float | None
    max_in_flight: int


class CallRequest(TypedDict):
    id: int
    tool: str
    arguments: dict[str, Any]


class CallsBody(TypedDict):
    calls: list[CallRequest]
    reply_channel: Channel


class CallError(TypedDict):
    kind: ErrorKind
    type: str
    message: str


class CallResult(TypedDict, total=False):
    id: int
    ok: bool
    value: Any
    error: CallError


class ResultsBody(TypedDict):
    results: list[CallResult]


class CallIdsBody(TypedDict):
    """``queued``: these calls wait for a free host thread; ``started``: now they run."""

    ids: list[int]


class CancelledBody(TypedDict):
    ids: list[int]
    reason: CancelReason


class ReadyBody(TypedDict):
    protocol: int
    package: str  # the kernel side's progtc_kernel version
    injected: bool  # True where the host brought the kernel-side code (not installed)
    ipykernel: str
    python: str
    shell_replies: bool


class CloseBody(TypedDict):
    reason: str


class _ErrorMessage(TypedDict):
    message: str


class ErrorBody(_ErrorMessage, total=False):
    """Protocol 1 kernels sent the message alone."""

    protocol: int
    package: str


_ERROR_KINDS = frozenset(get_args(ErrorKind))


def result_problem(entry: Any) -> str | None:
    """What is wrong with one entry of a ``results`` body, or None if it is sound.

    Never raises, whatever the entry holds: the kernel checks an entry completely
    before its call leaves the in-flight table, so that every call ends."""
    if not isinstance(entry, dict):
        return f"a result must be an object, not {type(entry).__name__}"
    if entry.get("ok") is True:
        return None if "value" in entry else "a successful result has no 'value'"
    if entry.get("ok") is not False:
        return "a result's 'ok' must be true or false"
    error = entry.get("error")
    if not isinstance(error, dict):
        return "a failed result has no 'error' object"
    kind = error.get("kind")
    if not isinstance(kind, str) or kind not in _ERROR_KINDS:  # a list is unhashable
        return f"unknown error kind {_short_repr(kind)}"
    if not (isinstance(error.get("type"), str) and isinstance(error.get("message"), str)):
        return "a failed result's error needs a 'type' and a 'message' string"
    return None


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except RecursionError:  # nested deeper than repr can go
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def pack(
    msg_type: str, body: Mapping[str, Any] | bytes, dumps: Callable[[Any], bytes] | None = None
) -> tuple[dict[str, Any], list[bytes]]:
    """Build comm ``data`` and ``buffers`` for one message (``body`` may be JSON bytes)."""
    if isinstance(body, bytes):
        payload = body
    else:
        payload = dumps(body) if dumps else json.dumps(body, separators=(",", ":")).encode()
    return {"v": PROTOCOL_VERSION, "type": msg_type}, [payload]


def unpack_header(data: Mapping[str, Any]) -> tuple[int, str]:
    """The (version, type) of a message, without touching its body."""
    return int(data.get("v", 0)), str(data.get("type", ""))


def body_bytes(buffers: list[Any] | None) -> bytes:
    if not buffers:
        raise ValueError("progtc_kernel message without a body buffer")
    buf = buffers[0]
    return buf if isinstance(buf, bytes) else bytes(buf)


# -- a tool's signature, from its spec -------------------------------------------

_KINDS = {
    "positional_only": inspect.Parameter.POSITIONAL_ONLY,
    "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "var_positional": inspect.Parameter.VAR_POSITIONAL,
    "keyword_only": inspect.Parameter.KEYWORD_ONLY,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}


class _Source:
    """Shows as the source text it holds: ``city: str = 'Paris'`` in signatures."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_of(spec: ToolSpec) -> inspect.Signature:
    """The tool's Python signature, as the kernel shows it (annotations as text)."""
    parameters = [
        inspect.Parameter(
            p["name"],
            _KINDS[p["kind"]],
            default=(
                inspect.Parameter.empty if p["default_repr"] is None else _Source(p["default_repr"])
            ),
            annotation=(
                inspect.Parameter.empty if p["annotation"] is None else _Source(p["annotation"])
            ),
        )
        for p in spec["parameters"]
    ]
    returns = spec["returns"]
    return inspect.Signature(
        parameters,
        return_annotation=inspect.Signature.empty if returns is None else _Source(returns),
    )
