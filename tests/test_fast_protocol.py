"""The typed protocol: each message type has one body type, ``pack`` builds it, and
what arrives is checked against the same types (``body_problem`` in the kernel,
pydantic on the host). Fabricated messages, no kernel."""

from __future__ import annotations

import json
import logging
from typing import Any, get_args

import pytest

from progtc_kernel.exceptions import ProtocolMismatchError
from progtc_kernel.host.bridge import ToolBridge
from progtc_kernel.protocol import (
    HOST_BODIES,
    KERNEL_BODIES,
    PROTOCOL_VERSION,
    HostMessageType,
    KernelMessageType,
    body_problem,
    pack,
    unpack_header,
)

from .fakes import FakeTransport

pytestmark = pytest.mark.fast

SOUND_HOST_BODIES: dict[str, dict[str, Any]] = {
    "register": {"tools": [], "tool_timeout": 10.0, "max_in_flight": 256},
    "hello": {},
    "tools": {"tools": [], "tool_timeout": None, "max_in_flight": 1},
    "results": {"results": [{"id": 1, "ok": True, "value": 42}]},
    "queued": {"ids": [1, 2]},
    "started": {"ids": [3]},
    "resume": {},
    "close": {"reason": "the host closed the connection"},
}
SOUND_KERNEL_BODIES: dict[str, dict[str, Any]] = {
    "ready": {
        "protocol": PROTOCOL_VERSION,
        "package": "0.2.0",
        "injected": True,
        "ipykernel": "7.1.0",
        "python": "3.11.7",
        "shell_replies": True,
        "held_runs": [],
    },
    "calls": {
        "calls": [{"id": 1, "tool": "get_weather", "arguments": {"city": "Oslo"}}],
        "reply_channel": "shell",
    },
    "cancelled": {"ids": [1], "reason": "timeout"},
    "queued": {"ids": [1]},
    "started": {"ids": [1]},
    "error": {"message": "no", "protocol": PROTOCOL_VERSION, "package": "0.2.0"},
}


async def get_weather(city: str) -> str:
    return f"Sunny in {city}"


def test_every_declared_message_type_has_one_body_type() -> None:
    assert set(HOST_BODIES) == set(get_args(HostMessageType)) == set(SOUND_HOST_BODIES)
    assert set(KERNEL_BODIES) == set(get_args(KernelMessageType)) == set(SOUND_KERNEL_BODIES)


@pytest.mark.parametrize(
    ("msg_type", "body", "bodies"),
    [(t, b, HOST_BODIES) for t, b in SOUND_HOST_BODIES.items()]
    + [(t, b, KERNEL_BODIES) for t, b in SOUND_KERNEL_BODIES.items()],
)
def test_each_message_type_round_trips_and_its_body_is_sound(
    msg_type: Any, body: Any, bodies: Any
) -> None:
    data, buffers = pack(msg_type, body)
    assert unpack_header(data) == (PROTOCOL_VERSION, msg_type)
    received = json.loads(buffers[0])
    assert received == body
    assert body_problem(msg_type, received, bodies) is None


def test_a_body_given_as_json_bytes_is_sent_as_it_is() -> None:
    encoded = b'{"results":[{"id":1,"ok":true,"value":1}]}'
    assert pack("results", encoded).buffers == [encoded]


@pytest.mark.parametrize(
    ("msg_type", "body", "problem"),
    [
        ("queued", {"ids": "no"}, "'ids' must be a list of integers, not 'no'"),
        ("started", {"ids": [1, [2]]}, "'ids' must be a list of integers, not [1, [2]]"),
        ("queued", {"ids": [True]}, "'ids' must be a list of integers, not [True]"),
        ("queued", {}, "'ids' is missing"),
        ("close", {"reason": 5}, "'reason' must be a string, not 5"),
        ("results", {"results": {}}, "'results' must be a list of objects, not {}"),
        (
            "register",
            {"tools": [], "tool_timeout": "soon", "max_in_flight": 1},
            "'tool_timeout' must be a number or null, not 'soon'",
        ),
        (
            "tools",
            {"tools": [], "tool_timeout": None, "max_in_flight": 1.5},
            "'max_in_flight' must be an integer, not 1.5",
        ),
        ("register", {"tools": []}, "'max_in_flight' is missing"),
        ("hello", [], "the body must be a JSON object, not list"),
        ("resume", "x", "the body must be a JSON object, not str"),
        ("frobnicate", {}, "unknown message type 'frobnicate'"),
        ("ready", {}, "unknown message type 'ready'"),  # the kernel's, not the host's
    ],
)
def test_a_wrong_body_or_type_is_named_with_what_is_wrong(
    msg_type: str, body: Any, problem: str
) -> None:
    assert body_problem(msg_type, body) == problem


@pytest.mark.parametrize(
    ("msg_type", "body", "problem"),
    [
        ("calls", {"calls": []}, "'reply_channel' is missing"),
        (
            "calls",
            {"calls": [], "reply_channel": "stdin"},
            "'reply_channel' must be 'shell' or 'control', not 'stdin'",
        ),
        (
            "cancelled",
            {"ids": [1], "reason": "bored"},
            "'reason' must be 'interrupt' or 'timeout' or 'cancelled', not 'bored'",
        ),
        ("error", {}, "'message' is missing"),
        ("register", {}, "unknown message type 'register'"),  # the host's, not the kernel's
    ],
)
def test_the_same_checks_read_what_a_kernel_sends(msg_type: str, body: Any, problem: str) -> None:
    assert body_problem(msg_type, body, KERNEL_BODIES) == problem


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"results": [{"id": 1, "ok": True, "value": {"deep": [[[[]]]]}}]},
        {"ids": list(range(10_000))},
        {"x": float("nan")},
    ],
)
def test_checking_never_raises(body: Any) -> None:
    for msg_type in [*HOST_BODIES, "?"]:
        body_problem(msg_type, body)


# -- the host reads what the kernel sends ----------------------------------------------


async def test_a_kernel_message_of_an_unknown_type_or_a_wrong_body_is_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = FakeTransport()
    async with ToolBridge(transport, [get_weather], extension="loaded") as bridge:
        transport.kernel_says("frobnicate", {})
        transport.kernel_says("cancelled", {"ids": [1], "reason": "bored"})
        transport.kernel_says("calls", {"calls": [{"id": "one"}], "reply_channel": "shell"})
        transport.kernel_says(
            "calls",
            {
                "calls": [{"id": 1, "tool": "get_weather", "arguments": {"city": "Oslo"}}],
                "reply_channel": "shell",
            },
        )
        results = await transport.host_said("results")  # and it still serves
    assert results.body["results"][0]["value"] == "Sunny in Oslo"
    assert bridge.bad_messages.counts == {
        "bad 'frobnicate' message": 1,
        "bad 'cancelled' message": 1,
        "bad 'calls' message": 1,
    }
    assert "unknown message type 'frobnicate'" in caplog.text


async def test_a_kernel_that_refuses_the_registration_says_why() -> None:
    refusal = {
        "message": "unreadable register message: 'max_in_flight' is missing",
        "protocol": PROTOCOL_VERSION,
        "package": "0.2.0",
    }
    transport = FakeTransport(answer_register=("error", refusal))
    with pytest.raises(
        ProtocolMismatchError, match="the kernel refused this host: unreadable register"
    ):
        await ToolBridge(transport, [get_weather], extension="loaded").start()


async def test_a_message_the_kernel_refuses_later_is_logged_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = FakeTransport()
    with caplog.at_level(logging.WARNING, "progtc_kernel"):
        async with ToolBridge(transport, [get_weather], extension="loaded") as bridge:
            transport.kernel_says(
                "error",
                {
                    "message": "bad 'queued' message: 'ids' must be a list of integers",
                    "protocol": PROTOCOL_VERSION,
                    "package": "0.2.0",
                },
            )
            assert bridge.kernel_info is not None  # still registered, still serving
    assert bridge.bad_messages.counts["refused by the kernel"] == 1
    assert "'ids' must be a list of integers" in caplog.text
