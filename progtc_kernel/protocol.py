"""The wire protocol both sides speak: typed, versioned comm messages.

Every message travels on one comm (target ``progtc_kernel``). Its comm ``data`` is
a small routing dict ``{"v": PROTOCOL_VERSION, "type": ...}`` and its first buffer
holds the body as JSON bytes, so large arguments and results skip Jupyter's
per-message JSON cleaning and are never encoded twice.

Host to kernel:  ``register`` (the comm_open), ``hello``, ``tools``, ``results``,
                 ``queued``, ``started``, ``resume``, ``close``.
Kernel to host:  ``ready``, ``calls``, ``cancelled``, ``queued``, ``started``, ``error``.

``hello`` follows ``ready`` on the shell channel: from it the kernel learns which
connection is this host's, to notice when it closes. ``queued`` and ``started``
concern calls that wait on the host (for a free thread, or for approval): the kernel
does not charge that wait to ``tool_timeout``. ``resume`` follows a dropped connection that came
back (a remote kernel's websocket): the kernel sends again every call still waiting
for its result, since the call or its result may have been lost with the connection;
the host answers each call id once, replaying a result it already sent. A call
that waits for approval is ``queued`` too, and a denied one fails with error kind
``denied`` (``ToolDeniedError`` in the kernel).

A resumable run says so in its ``execute_request``'s metadata (``HoldBody``); a host
that registers is told in ``ready`` which such runs it takes over, and ``close``
lists the calls that wait on the host, which may go to the next host. A held call
(``CallRequest.held``) that the host said waits runs only after the kernel answered
its ``started`` (``ack``) with a ``started`` of its own, so that the kernel always
knows whether the host may have run it: nothing runs twice.

``error`` is the one message every version reads (a body with a ``message``), so a
host and a kernel of different versions can always tell each other so; a kernel
answers a message it cannot use with one. ``PROTOCOL_VERSION`` covers the messages
and what the host runs in the kernel besides them (``install_modules_code``,
``run_script_code``, ``OUTCOME_MIME``): it changes whenever either changes
incompatibly.

Each message type has one body type (``HOST_BODIES``, ``KERNEL_BODIES``), and
``pack`` is the one way to build a message: mypy rejects a body of the wrong type.
What arrives is checked against the same types: by pydantic on the host, by
``body_problem`` (standard library only) in the kernel.

This module imports nothing heavy: the kernel side loads it, and the kernel must
stay light.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin, get_type_hints, overload

try:  # pydantic (host side) needs typing_extensions' TypedDict before Python 3.12
    from typing_extensions import TypedDict
except ImportError:  # pragma: no cover - a kernel without typing_extensions
    from typing import TypedDict

PROTOCOL_VERSION = 3
COMM_TARGET = "progtc_kernel"
HOST_CLOSED = "the host closed the connection"

Channel = Literal["shell", "control"]
ParameterKind = Literal[
    "positional_only", "positional_or_keyword", "var_positional", "keyword_only", "var_keyword"
]
ErrorKind = Literal["tool", "arguments", "unknown_tool", "result", "cancelled", "denied"]
CancelReason = Literal["interrupt", "timeout", "cancelled"]

HostMessageType = Literal[
    "register", "hello", "tools", "results", "queued", "started", "resume", "close"
]
KernelMessageType = Literal["ready", "calls", "cancelled", "queued", "started", "error"]


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


class _RegisterRequired(TypedDict):
    tools: list[ToolSpec]
    tool_timeout: float | None
    max_in_flight: int


class RegisterBody(_RegisterRequired, total=False):
    """Sent with the comm_open, and again as ``tools`` whenever the set changes.

    ``approval`` names the tools whose calls may wait for a person's approval: the
    kernel sends those at the end of the loop turn, so that the calls of one
    ``gather`` reach the host (and its approver) together.

    ``calls_on_stdin``: the host listens on a stdin connection whose ZMQ identity is
    its session id; from its ``hello`` on, the kernel sends calls there (to it alone)
    when it can, and on iopub otherwise."""

    approval: list[str]
    calls_on_stdin: bool


class _CallRequired(TypedDict):
    id: int
    tool: str
    arguments: dict[str, Any]


class CallRequest(_CallRequired, total=False):
    """One tool call. ``traceparent``: the W3C trace context of the span the code
    made the call in (its cell's run, or a span the code opened), when the run is
    traced: the host's span of the call is its child. ``held``: the call belongs to a
    resumable run; a host that said it waits (``queued``) runs it only once the kernel
    acknowledged its ``started``."""

    traceparent: str
    held: bool


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


class _CallIds(TypedDict):
    ids: list[int]


class CallIdsBody(_CallIds, total=False):
    """``queued``: these calls wait on the host (for a thread, an approval); ``started``:
    they run now. With ``ack`` (held calls), the kernel answers with a message of the
    same type and the ids it counts so. A held call the host said waits runs only once
    that ``started`` answer came: from then on the kernel counts it as started (a host
    gone later may have run it); before, it is safe to send to another host."""

    ack: bool


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
    # Resumable runs whose host went without a word: this host takes them over (their
    # calls waiting for a host are sent to it once this message is out).
    held_runs: list[str]


class HoldBody(TypedDict):
    """A resumable run: in its ``execute_request``'s metadata, under ``HOLD_METADATA``.

    Should the host's connection close without a ``close`` (killed, crashed), the
    kernel keeps the run's tool calls waiting up to ``grace`` seconds for a host to
    attach and serve them, instead of failing them with ``HostDisconnectedError``.
    It travels in the request itself, not as a message of its own, because a host
    learns the request's msg_id only as it sends it, and a message sent after it
    could reach the kernel after a short run had ended."""

    grace: float


class _CloseReason(TypedDict):
    reason: str


class CloseBody(_CloseReason, total=False):
    """``waiting``: the calls this host had said wait (``queued``) and never started;
    those of a resumable run go to the next host (see ``HoldBody``)."""

    waiting: list[int]


class _ErrorMessage(TypedDict):
    message: str


class ErrorBody(_ErrorMessage, total=False):
    """Protocol 1 kernels sent the message alone."""

    protocol: int
    package: str


class EmptyBody(TypedDict):
    """``hello`` and ``resume`` say everything by their type."""


# The body of each message type.
HOST_BODIES: dict[HostMessageType, type] = {
    "register": RegisterBody,
    "hello": EmptyBody,
    "tools": RegisterBody,
    "results": ResultsBody,
    "queued": CallIdsBody,
    "started": CallIdsBody,
    "resume": EmptyBody,
    "close": CloseBody,
}
# What a host puts in the metadata of an execute_request, by key.
HOLD_METADATA = "progtc_kernel_hold"
RUN_METADATA: dict[str, type] = {HOLD_METADATA: HoldBody}
KERNEL_BODIES: dict[KernelMessageType, type] = {
    "ready": ReadyBody,
    "calls": CallsBody,
    "cancelled": CancelledBody,
    "queued": CallIdsBody,
    "started": CallIdsBody,
    "error": ErrorBody,
}

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


class Packed(NamedTuple):
    """One message, ready to send: the comm ``data`` and its ``buffers``."""

    data: dict[str, Any]
    buffers: list[bytes]


Dumps = Callable[[Any], bytes]


# One overload per body type: mypy rejects a body that does not fit the message type.
# ``bytes`` is that body's JSON, encoded up front (results and calls are assembled
# from entries each encoded once).
@overload
def pack(
    msg_type: Literal["register", "tools"], body: RegisterBody, dumps: Dumps | None = None
) -> Packed: ...
@overload
def pack(
    msg_type: Literal["hello", "resume"], body: EmptyBody, dumps: Dumps | None = None
) -> Packed: ...
@overload
def pack(
    msg_type: Literal["results"], body: ResultsBody | bytes, dumps: Dumps | None = None
) -> Packed: ...
@overload
def pack(
    msg_type: Literal["queued", "started"], body: CallIdsBody, dumps: Dumps | None = None
) -> Packed: ...
@overload
def pack(msg_type: Literal["close"], body: CloseBody, dumps: Dumps | None = None) -> Packed: ...
@overload
def pack(msg_type: Literal["ready"], body: ReadyBody, dumps: Dumps | None = None) -> Packed: ...
@overload
def pack(
    msg_type: Literal["calls"], body: CallsBody | bytes, dumps: Dumps | None = None
) -> Packed: ...
@overload
def pack(
    msg_type: Literal["cancelled"], body: CancelledBody, dumps: Dumps | None = None
) -> Packed: ...
@overload
def pack(msg_type: Literal["error"], body: ErrorBody, dumps: Dumps | None = None) -> Packed: ...
def pack(
    msg_type: HostMessageType | KernelMessageType,
    body: Mapping[str, Any] | bytes,
    dumps: Dumps | None = None,
) -> Packed:
    """Build one message of ``msg_type`` with ``body``.

    Args:
        msg_type: the message type.
        body: its body, or the body's JSON bytes.
        dumps: encodes the body as JSON bytes (default: ``json.dumps``).

    Returns:
        The comm ``data`` and ``buffers`` to send.
    """
    if isinstance(body, bytes):
        payload = body
    else:
        payload = dumps(body) if dumps else json.dumps(body, separators=(",", ":")).encode()
    return Packed({"v": PROTOCOL_VERSION, "type": msg_type}, [payload])


def unpack_header(data: Mapping[str, Any]) -> tuple[int, str]:
    """The (version, type) of a message, without touching its body."""
    return int(data.get("v", 0)), str(data.get("type", ""))


def body_bytes(buffers: list[Any] | None) -> bytes:
    if not buffers:
        raise ValueError("progtc_kernel message without a body buffer")
    buf = buffers[0]
    return buf if isinstance(buf, bytes) else bytes(buf)


# -- checking a received body, with the standard library (the kernel's side) ---------

_SCALARS = (int, float, str, bool)
_hints: dict[type, dict[str, Any]] = {}


def body_problem(msg_type: str, body: Any, bodies: Mapping[Any, type] = HOST_BODIES) -> str | None:
    """What is wrong with a received body, or None if it fits its message type.

    Checks the type is known, every required key is there and each value has its
    declared type (a list's items when they are plain values, such as call ids).
    Deeper structures are the receiver's to check item by item, so that one bad
    result fails its own call only. Never raises.

    Args:
        msg_type: the message type the comm data names.
        body: the decoded JSON body.
        bodies: the body type of each message type this side receives.

    Returns:
        The problem, worded for the sender's log; None for a sound body.
    """
    schema = bodies.get(msg_type)
    if schema is None:
        return f"unknown message type {_short_repr(msg_type)}"
    if not isinstance(body, dict):
        return f"the body must be a JSON object, not {type(body).__name__}"
    hints = _hints.get(schema)
    if hints is None:
        hints = _hints[schema] = get_type_hints(schema)
    for key in sorted(schema.__required_keys__):  # type: ignore[attr-defined]
        if key not in body:
            return f"{key!r} is missing"
    for key, expected in hints.items():
        if key in body and not _fits(body[key], expected, items=True):
            return f"{key!r} must be {_describe(expected)}, not {_short_repr(body[key])}"
    return None


def _fits(value: Any, expected: Any, items: bool) -> bool:
    origin = get_origin(expected)
    if expected is Any:
        return True
    if origin is Literal:
        return any(type(value) is type(choice) and value == choice for choice in get_args(expected))
    if origin is Union or origin is types.UnionType:
        return any(_fits(value, option, items) for option in get_args(expected))
    if origin is list:
        (item,) = get_args(expected)
        if not isinstance(value, list):
            return False
        if not items or item not in _SCALARS:
            return True
        if item is float:
            return all(_fits(v, float, False) for v in value)
        return all(type(v) is item for v in value)  # call ids: hundreds, on every notice
    if origin is dict or typing.is_typeddict(expected):
        return isinstance(value, dict)
    if expected is type(None):
        return value is None
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected in (int, str, bool):
        return type(value) is expected
    return True  # nothing narrower declared


def _describe(expected: Any) -> str:
    origin = get_origin(expected)
    if origin is Literal:
        return " or ".join(repr(choice) for choice in get_args(expected))
    if origin is Union or origin is types.UnionType:
        return " or ".join(_describe(option) for option in get_args(expected))
    if origin is list:
        item = get_args(expected)[0]
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(item, 'objects')}"
    if origin is dict or typing.is_typeddict(expected):
        return "an object"
    if expected is type(None):
        return "null"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(expected, getattr(expected, "__name__", str(expected)))


# -- what the host runs in the kernel besides messages -------------------------------

# A script's outcome (ProgrammaticToolset): display data of this type, from
# ``kernel_side.script.run_script``.
OUTCOME_MIME = "application/vnd.progtc-kernel.script-outcome+json"
# Modules a script may import besides the ones it is given.
ALWAYS_ALLOWED = frozenset({"tools", "__future__"})
# Names a helper module cannot have (``install_modules_code``).
RESERVED_MODULE_NAMES = frozenset({"tools"})


def problem_with_module_name(name: str) -> str | None:
    """Why ``name`` cannot be a helper module's name, if it cannot.

    Args:
        name: the name a client gives a helper module.
    """
    if not isinstance(name, str) or not name.isidentifier():
        return f"Module name {name!r} is not a valid identifier."
    if name in RESERVED_MODULE_NAMES:
        return f"Module name {name!r} is reserved."
    return None


def install_modules_code(modules: Mapping[str, str]) -> str:
    """The code that makes helper modules importable in the kernel (it raises
    ``ValueError`` there for a name that cannot be one).

    Args:
        modules: each module's source text, by name.
    """
    return (
        "__import__('progtc_kernel.kernel_side.modules', fromlist=['install'])"
        f".install({dict(modules)!r})"
    )


def run_script_code(source: str, modules: list[str], keep: str | None) -> str:
    """The cell that runs a ``ProgrammaticToolset`` script in the kernel and publishes
    its outcome as ``OUTCOME_MIME`` display data.

    Args:
        source: the script.
        modules: the modules it may import (besides ``ALWAYS_ALLOWED``).
        keep: the key of a namespace kept for the next script (``None``: a fresh one).
    """
    return (
        "from progtc_kernel.kernel_side.script import run_script as _progtc_run_script\n"
        f"await _progtc_run_script({source!r}, {modules!r}, {keep!r})"
    )


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
