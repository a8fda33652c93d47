"""Reading the progtc comm messages a kernel sends: the protocol version, each body
checked against its type in ``protocol.py``, and handed to the bridge's handler."""

from __future__ import annotations

from typing import Any, Protocol

import pydantic

from .._install import install_hint
from .._version import __version__
from .._wire import BadMessages
from ..protocol import (
    PROTOCOL_VERSION,
    CallIdsBody,
    CallsBody,
    CancelledBody,
    ErrorBody,
    ReadyBody,
    body_bytes,
    unpack_header,
)

KERNEL_PYTHON = "<the kernel's python>"  # in install hints: the host cannot know it
_calls = pydantic.TypeAdapter(CallsBody)
_cancelled = pydantic.TypeAdapter(CancelledBody)
_ready = pydantic.TypeAdapter(ReadyBody)
_error = pydantic.TypeAdapter(ErrorBody)
_call_ids = pydantic.TypeAdapter(CallIdsBody)


class KernelMessageHandler(Protocol):
    """What a host does with each message a kernel sends on the progtc comm."""

    def on_calls(self, body: CallsBody, parent_id: str | None) -> None: ...

    def on_cancelled(self, body: CancelledBody) -> None: ...

    def on_ready(self, body: ReadyBody) -> None: ...

    def on_queued(self, body: CallIdsBody) -> None: ...

    def on_started(self, body: CallIdsBody) -> None: ...

    def on_error(self, body: ErrorBody) -> None: ...


def dispatch_comm_msg(
    msg: dict[str, Any], handler: KernelMessageHandler, bad_messages: BadMessages
) -> None:
    """Hand one comm message to ``handler``; one that cannot be read is reported.

    Args:
        msg: the kernel's ``comm_msg``.
        handler: receives the message, its body checked against its type.
        bad_messages: where a message that cannot be read is counted and logged.
    """
    version, kind = unpack_header(msg["content"].get("data") or {})
    if version != PROTOCOL_VERSION and kind != "error":  # every version reads errors
        bad_messages.report(
            "protocol version",
            f"{kind!r} message of version {version}, expected {PROTOCOL_VERSION}",
        )
        return
    try:
        _dispatch(handler, kind, body_bytes(msg.get("buffers")), msg["parent_header"].get("msg_id"))
    except (ValueError, pydantic.ValidationError) as exc:
        bad_messages.report(f"bad {kind!r} message", exc)


def _dispatch(handler: KernelMessageHandler, kind: str, body: bytes, parent_id: str | None) -> None:
    if kind == "calls":
        handler.on_calls(_calls.validate_json(body), parent_id)
    elif kind == "cancelled":
        handler.on_cancelled(_cancelled.validate_json(body))
    elif kind == "ready":
        handler.on_ready(_ready.validate_json(body))
    elif kind == "queued":
        handler.on_queued(_call_ids.validate_json(body))
    elif kind == "started":
        handler.on_started(_call_ids.validate_json(body))
    elif kind == "error":
        handler.on_error(_error.validate_json(body))
    else:
        raise ValueError(f"unknown message type {kind!r}")


def mismatch(error: ErrorBody) -> str:
    """Why a kernel of another version refused this host, and what to do about it.

    Args:
        error: the kernel's ``error`` body.
    """
    theirs = (
        f"progtc-kernel {error['package']} (protocol {error['protocol']})"
        if "package" in error and "protocol" in error
        else "another version"
    )
    return (
        f"this kernel has the progtc_kernel extension of {theirs} loaded, and this host "
        f"runs progtc-kernel {__version__} (protocol {PROTOCOL_VERSION}); the kernel "
        f"says: {error['message']}. Restart the kernel without loading the extension at "
        "start (the host brings its own when the kernel has none), or install this "
        f"version in the kernel's environment: {install_hint(python=KERNEL_PYTHON)}"
    )
