"""Resumable runs, piece by piece without a kernel: which calls of a gone host are kept
for the next one, how a held call is renumbered, what a host's close says, and the
``resumable=`` values a run takes. (tests/test_resumable.py kills real hosts.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from progtc_kernel import ToolKernel
from progtc_kernel.host.bridge import ToolBridge
from progtc_kernel.kernel_side.bridge import MAY_HAVE_RUN, KernelBridge, PendingCall
from progtc_kernel.kernel_side.held import grace_of
from progtc_kernel.protocol import HOLD_METADATA

from .fakes import FakeTransport

pytestmark = pytest.mark.fast

HELD_RUN = {"header": {"msg_id": "run-1"}, "metadata": {HOLD_METADATA: {"grace": 600}}}


def pending(bridge: KernelBridge, call_id: int, tool: str) -> PendingCall:
    call = PendingCall(call_id, tool, {}, HELD_RUN, bridge)
    call.future = concurrent.futures.Future()
    return call


async def test_a_gone_hosts_calls_are_kept_only_if_it_never_started_them() -> None:
    bridge = KernelBridge(
        None, "comm", b"topic", "host", shell_replies=None, loop=asyncio.get_running_loop()
    )
    running, queued, unsent = (
        pending(bridge, 1, "a"),
        pending(bridge, 2, "b"),
        pending(bridge, 3, "c"),
    )
    bridge._in_flight = {1: running, 2: queued}
    bridge._waiting.append(unsent)
    bridge.mark_queued([2], True)

    kept = bridge.close("the host went", held=lambda call: True)

    assert kept == [unsent, queued]
    error = running.future.exception() if running.future is not None else None
    assert str(getattr(error, "message", "")) == f"the host went; {MAY_HAVE_RUN}"


async def test_without_a_hold_every_call_fails_as_before() -> None:
    bridge = KernelBridge(
        None, "comm", b"topic", "host", shell_replies=None, loop=asyncio.get_running_loop()
    )
    queued = pending(bridge, 1, "a")
    bridge._in_flight = {1: queued}
    bridge.mark_queued([1], True)

    assert bridge.close("the host went") == []
    assert queued.future is not None and queued.future.exception() is not None


async def test_a_held_call_taken_by_the_next_host_is_numbered_as_its_own() -> None:
    loop = asyncio.get_running_loop()
    gone = KernelBridge(None, "a", b"t", "a", shell_replies=None, loop=loop)
    call = PendingCall(7, "count", {"n": 1}, HELD_RUN, gone)
    sent: list[PendingCall] = []
    next_host = KernelBridge(None, "b", b"t", "b", shell_replies=None, loop=loop)
    next_host._send_calls = sent.extend  # type: ignore[method-assign,assignment]

    next_host.take_calls([call])

    assert (call.id, call.owner, sent) == (1, next_host, [call])
    assert call.request == b'{"id":1,"tool":"count","arguments":{"n":1},"held":true}'


@pytest.mark.parametrize(
    ("metadata", "grace"),
    [
        ({HOLD_METADATA: {"grace": 600}}, 600.0),
        ({HOLD_METADATA: {"grace": 1.5}}, 1.5),
        ({HOLD_METADATA: {"grace": 0}}, None),
        ({HOLD_METADATA: {"grace": "600"}}, None),
        ({HOLD_METADATA: "yes"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_a_run_is_held_only_for_a_positive_grace_period(metadata: Any, grace: float | None) -> None:
    assert grace_of({"header": {"msg_id": "r"}, "metadata": metadata}) == grace


async def test_closing_names_the_calls_that_wait_for_a_thread(transport: FakeTransport) -> None:
    release = threading.Event()

    def slow() -> None:
        release.wait()

    def count() -> int:
        return 1

    async with ToolBridge(transport, [slow, count], extension="loaded", tool_threads=1):
        transport.kernel_says(
            "calls",
            {
                "calls": [
                    {"id": 1, "tool": "slow", "arguments": {}},
                    {"id": 2, "tool": "count", "arguments": {}},
                ],
                "reply_channel": "shell",
            },
        )
        queued = await transport.host_said("queued")
        assert queued.body == {"ids": [2]}
        release.set()  # slow ends as the host leaves; count never starts
    close = await transport.host_said("close")
    assert close.body["waiting"] == [2]


@pytest.fixture
async def transport() -> FakeTransport:
    return FakeTransport()


@pytest.mark.parametrize("resumable", [0, -1, float("inf"), "yes"])
async def test_resumable_takes_true_false_or_seconds(resumable: Any) -> None:
    kernel = ToolKernel()  # not started: the value is checked first
    with pytest.raises(ValueError, match="resumable must be True, False or a positive number"):
        await kernel.execute("pass", resumable=resumable)


async def test_a_held_call_that_waited_runs_only_once_the_kernel_counts_it_started(
    transport: FakeTransport,
) -> None:
    release = threading.Event()
    ran: list[str] = []

    def slow() -> None:
        release.wait()

    def count() -> int:
        ran.append("count")
        return 1

    async with ToolBridge(transport, [slow, count], extension="loaded", tool_threads=1) as host:
        transport.kernel_says(
            "calls",
            {
                "calls": [
                    {"id": 1, "tool": "slow", "arguments": {}, "held": True},
                    {"id": 2, "tool": "count", "arguments": {}, "held": True},
                ],
                "reply_channel": "shell",
            },
        )
        assert (await transport.host_said("queued")).body == {"ids": [2], "ack": True}
        confirmed = asyncio.ensure_future(host.confirm_waiting())
        transport.kernel_says("queued", {"ids": [2]})
        await confirmed  # the kernel knows count waits here
        release.set()  # slow ends, count takes the thread, and asks first
        assert (await transport.host_said("started")).body == {"ids": [2], "ack": True}
        await transport.host_said("results")  # slow's
        assert ran == []  # a host killed now never ran it: the kernel sends it again
        transport.kernel_says("started", {"ids": [2]})
        results = await transport.host_said("results")
        assert results.body == {"results": [{"id": 2, "ok": True, "value": 1}]}
        assert ran == ["count"]


async def test_a_call_of_a_run_not_held_runs_without_waiting_for_the_kernel(
    transport: FakeTransport,
) -> None:
    release = threading.Event()

    def slow() -> None:
        release.wait()

    def count() -> int:
        return 1

    async with ToolBridge(transport, [slow, count], extension="loaded", tool_threads=1):
        transport.kernel_says(
            "calls",
            {
                "calls": [
                    {"id": 1, "tool": "slow", "arguments": {}},
                    {"id": 2, "tool": "count", "arguments": {}},
                ],
                "reply_channel": "shell",
            },
        )
        assert (await transport.host_said("queued")).body == {"ids": [2]}
        release.set()
        assert (await transport.host_said("started")).body == {"ids": [2]}
        assert any(
            result["id"] == 2
            for said in [await transport.host_said("results"), await transport.host_said("results")]
            for result in said.body["results"]
        )
