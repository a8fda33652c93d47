"""The host's half of the protocol, driven by fabricated kernel messages through a fake
``Transport``: registering, serving batches of calls, replaying after a reconnect,
thread notices, cancellation, and what it does with a kernel it cannot work with; and
the threads sync tools run on."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from progtc_kernel import __version__
from progtc_kernel.exceptions import ExtensionNotLoadedError, ProtocolMismatchError
from progtc_kernel.host.bridge import ToolBridge
from progtc_kernel.host.events import Event, ToolCallFinished, ToolCallStarted
from progtc_kernel.host.threads import ToolThreads
from progtc_kernel.protocol import COMM_TARGET, HOST_CLOSED, PROTOCOL_VERSION

from .fakes import READY, FakeTransport

pytestmark = pytest.mark.fast


async def get_weather(city: str, country: str = "France") -> str:
    """Current weather for a city."""
    return f"Sunny in {city}, {country}"


async def search(query: str, limit: int = 3) -> list[str]:
    return [f"{query} {i}" for i in range(limit)]


@pytest.fixture
async def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
async def bridge(transport: FakeTransport) -> AsyncIterator[ToolBridge]:
    async with ToolBridge(transport, [get_weather, search], extension="loaded") as bridge:
        yield bridge


def calls(*requests: tuple[int, str, dict[str, Any]], channel: str = "shell") -> dict[str, Any]:
    return {
        "calls": [{"id": i, "tool": t, "arguments": a} for i, t, a in requests],
        "reply_channel": channel,
    }


def results_of(*messages: Any) -> dict[int, Any]:
    return {entry["id"]: entry for message in messages for entry in message.body["results"]}


# -- registering -------------------------------------------------------------------


async def test_the_bridge_registers_its_tools_and_says_hello_once_ready(
    bridge: ToolBridge, transport: FakeTransport
) -> None:
    opened = next(sent for sent in transport.sent if sent.msg_type == "comm_open")
    assert opened.content["target_name"] == COMM_TARGET
    assert opened.content["data"] == {"v": PROTOCOL_VERSION, "type": "register"}
    body = opened.body
    assert [tool["name"] for tool in body["tools"]] == ["get_weather", "search"]
    assert body["tool_timeout"] == 10.0 and body["max_in_flight"] == 256
    assert bridge.kernel_info == READY
    hello = await transport.host_said("hello")
    assert hello.channel == "shell"  # the kernel learns which connection is ours


async def test_new_tools_are_sent_only_when_they_changed(
    bridge: ToolBridge, transport: FakeTransport
) -> None:
    bridge.use_tools([get_weather, search])
    assert "tools" not in transport.kinds()
    bridge.use_tools([search])
    sent = await transport.host_said("tools")
    assert [tool["name"] for tool in sent.body["tools"]] == ["search"]


async def test_closing_tells_the_kernel_on_control_before_leaving(transport: FakeTransport) -> None:
    async with ToolBridge(transport, [get_weather], extension="loaded"):
        pass
    close = await transport.host_said("close")
    assert close.channel == "control" and close.body == {"reason": HOST_CLOSED, "waiting": []}
    assert transport.closed


async def test_the_inject_policy_sends_the_load_expression_before_registering(
    transport: FakeTransport,
) -> None:
    async with ToolBridge(transport, [get_weather]):
        load = await transport.request("execute_request")
        assert load.content["silent"] and not load.content["code"]
        assert "progtc_kernel" in load.content["user_expressions"]["progtc_kernel"]


# -- a kernel it cannot work with ------------------------------------------------------


async def test_a_kernel_of_another_protocol_is_refused_naming_both_versions() -> None:
    transport = FakeTransport(
        answer_register=(
            "error",
            {"message": "protocol 1 expected", "protocol": 1, "package": "0.1.0"},
        )
    )
    with pytest.raises(ProtocolMismatchError) as refused:
        await ToolBridge(transport, [get_weather], extension="loaded").start()
    message = str(refused.value)
    assert "progtc-kernel 0.1.0 (protocol 1)" in message
    assert f"progtc-kernel {__version__} (protocol {PROTOCOL_VERSION})" in message
    assert "the kernel says: protocol 1 expected" in message
    assert "pip install" in message and "pip install progtc-kernel" not in message
    assert transport.closed


async def test_a_protocol_1_kernel_that_sends_only_a_message_is_still_understood() -> None:
    transport = FakeTransport(answer_register=("error", {"message": "unsupported"}))
    with pytest.raises(ProtocolMismatchError, match="extension of another version loaded"):
        await ToolBridge(transport, [get_weather], extension="loaded").start()


async def test_a_kernel_that_closes_the_comm_has_no_extension_and_says_what_to_do() -> None:
    transport = FakeTransport(answer_register=None)
    starting = asyncio.ensure_future(
        ToolBridge(transport, [get_weather], extension="loaded").start()
    )
    await transport.host_said("register")
    transport.deliver("iopub", "comm_close", {"comm_id": transport.comm_id, "data": {}})
    with pytest.raises(ExtensionNotLoadedError, match=r"Leave extension at its default"):
        await starting


async def test_a_kernel_without_the_installed_extension_gets_an_install_hint() -> None:
    transport = FakeTransport(answer_register=None)
    starting = asyncio.ensure_future(
        ToolBridge(transport, [get_weather], extension="installed").start()
    )
    load = await transport.request("execute_request")
    failed = {
        "status": "error",
        "ename": "ModuleNotFoundError",
        "evalue": "No module named 'progtc_kernel'",
        "traceback": [],
    }
    reply = {"status": "ok", "user_expressions": {"progtc_kernel": failed}}
    transport.deliver("shell", "execute_reply", reply, parent=load)
    with pytest.raises(ExtensionNotLoadedError) as refused:
        await starting
    assert "No module named 'progtc_kernel'" in str(refused.value)
    assert "<the kernel's python> -m pip install" in str(refused.value)


async def test_messages_of_another_version_are_dropped_and_counted(
    bridge: ToolBridge, transport: FakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "progtc_kernel"):
        for _ in range(3):
            transport.kernel_says(
                "calls", calls((1, "get_weather", {"city": "Paris"})), version=PROTOCOL_VERSION + 1
            )
    assert bridge.bad_messages.counts["protocol version"] == 3
    assert len([r for r in caplog.records if "dropped a bad message" in r.message]) == 1
    assert "results" not in transport.kinds()


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("calls", b"not json"),
        ("calls", b'{"calls": [{"id": "one", "tool": "search"}], "reply_channel": "shell"}'),
        ("calls", b'{"calls": [], "reply_channel": "stdin"}'),
        ("cancelled", b'{"ids": [1], "reason": "bored"}'),
        ("ready", b'{"protocol": 2}'),
        ("gossip", b"{}"),
    ],
)
async def test_a_malformed_message_is_reported_and_dropped_and_serving_goes_on(
    bridge: ToolBridge, transport: FakeTransport, kind: str, raw: bytes
) -> None:
    transport.kernel_says(kind, None, raw=raw)
    assert sum(bridge.bad_messages.counts.values()) == 1
    transport.kernel_says("calls", calls((7, "search", {"query": "ok", "limit": 1})))
    assert results_of(await transport.host_said("results")) == {
        7: {"id": 7, "ok": True, "value": ["ok 0"]}
    }


async def test_a_message_without_a_body_buffer_is_dropped(
    bridge: ToolBridge, transport: FakeTransport
) -> None:
    transport.deliver(
        "iopub",
        "comm_msg",
        {"comm_id": transport.comm_id, "data": {"v": PROTOCOL_VERSION, "type": "calls"}},
    )
    assert bridge.bad_messages.counts["bad 'calls' message"] == 1


# -- serving calls ------------------------------------------------------------------


async def test_a_batch_of_calls_is_served_and_its_results_batched_per_loop_turn(
    bridge: ToolBridge, transport: FakeTransport
) -> None:
    transport.kernel_says(
        "calls",
        calls(
            (1, "get_weather", {"city": "Paris"}),
            (2, "search", {"query": "inn", "limit": 2}),
            (3, "get_weather", {"city": "Rome", "country": "Italy"}),
        ),
    )
    first, rest = await transport.host_said("results"), await transport.host_said("results")
    # The first result of the turn leaves at once, the others follow together.
    assert [e["id"] for e in first.body["results"]] == [1]
    assert [e["id"] for e in rest.body["results"]] == [2, 3]
    assert results_of(first, rest) == {
        1: {"id": 1, "ok": True, "value": "Sunny in Paris, France"},
        2: {"id": 2, "ok": True, "value": ["inn 0", "inn 1"]},
        3: {"id": 3, "ok": True, "value": "Sunny in Rome, Italy"},
    }
    assert first.channel == rest.channel == "shell"


async def test_results_go_back_on_the_channel_the_kernel_asked_for(
    bridge: ToolBridge, transport: FakeTransport
) -> None:
    transport.kernel_says("calls", calls((1, "search", {"query": "x"}), channel="control"))
    assert (await transport.host_said("results")).channel == "control"


@pytest.mark.parametrize(
    ("request_", "kind", "message"),
    [
        (
            (1, "teleport", {}),
            "unknown_tool",
            "no tool named 'teleport'; available tools: get_weather, search",
        ),
        ((1, "get_weather", {}), "arguments", "city"),
        ((1, "search", {"query": "x", "limit": "many"}), "arguments", "limit"),
    ],
)
async def test_a_call_that_cannot_run_gets_an_error_result(
    bridge: ToolBridge, transport: FakeTransport, request_: Any, kind: str, message: str
) -> None:
    transport.kernel_says("calls", calls(request_))
    (entry,) = (await transport.host_said("results")).body["results"]
    assert entry["ok"] is False and entry["error"]["kind"] == kind
    assert message in entry["error"]["message"]


async def test_each_call_is_told_to_tool_listeners_with_the_cell_that_made_it(
    bridge: ToolBridge, transport: FakeTransport
) -> None:
    seen: list[tuple[str | None, Event]] = []
    bridge.add_tool_listener(lambda parent, event: seen.append((parent, event)))
    transport.send("shell", "execute_request", {"code": "await search('a', limit=1)"})
    cell = await transport.request("execute_request")
    transport.kernel_says("calls", calls((4, "search", {"query": "a", "limit": 1})), parent=cell)
    await transport.host_said("results")
    (parent, started), (_, finished) = seen
    assert parent == cell.msg_id
    assert isinstance(started, ToolCallStarted) and started.name == "search"
    assert isinstance(finished, ToolCallFinished) and finished.call.ok
    assert finished.call.arguments == {"query": "a", "limit": 1}


async def test_a_call_sent_again_after_a_reconnect_is_answered_once_from_the_cache(
    transport: FakeTransport,
) -> None:
    ran: list[str] = []

    async def book(room: str) -> str:
        ran.append(room)
        return f"booked {room}"

    async with ToolBridge(transport, [book], extension="loaded") as bridge:
        transport.kernel_says("calls", calls((1, "book", {"room": "101"})))
        answered = await transport.host_said("results")
        transport.reconnect()
        assert (await transport.host_said("resume")).channel == "control"
        info = await transport.request("comm_info_request")
        transport.deliver(
            "control",
            "comm_info_reply",
            {"status": "ok", "comms": {transport.comm_id: {"target_name": COMM_TARGET}}},
            parent=info,
        )
        await bridge.wait_ready()
        transport.kernel_says("calls", calls((1, "book", {"room": "101"})))
        replayed = await transport.host_said("results")
    assert (
        replayed.body
        == answered.body
        == {"results": [{"id": 1, "ok": True, "value": "booked 101"}]}
    )
    assert ran == ["101"]  # booked once


async def test_a_kernel_that_forgot_the_host_while_away_is_registered_again(
    bridge: ToolBridge, transport: FakeTransport
) -> None:
    first = await transport.host_said("register")
    transport.reconnect()
    info = await transport.request("comm_info_request")
    transport.deliver("control", "comm_info_reply", {"status": "ok", "comms": {}}, parent=info)
    again = await transport.host_said("register")
    assert again.content["comm_id"] != first.content["comm_id"]
    assert await bridge.wait_ready() == READY


async def test_sync_tools_waiting_for_a_thread_are_announced_queued_then_started(
    transport: FakeTransport,
) -> None:
    release = threading.Event()

    def slow(n: int) -> int:
        release.wait()
        return n

    async with ToolBridge(transport, [slow], tool_threads=1, extension="loaded"):
        transport.kernel_says("calls", calls((1, "slow", {"n": 1}), (2, "slow", {"n": 2})))
        queued = await transport.host_said("queued")
        assert queued.body == {"ids": [2]}  # 1 took the only thread
        release.set()
        assert (await transport.host_said("started")).body == {"ids": [2]}
        answered = results_of(
            await transport.host_said("results"), await transport.host_said("results")
        )
    assert {i: e["value"] for i, e in answered.items()} == {1: 1, 2: 2}


async def test_a_cancelled_call_cancels_its_running_tool_and_sends_no_result(
    transport: FakeTransport,
) -> None:
    running, cancelled = asyncio.Event(), asyncio.Event()

    async def wait_forever() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    finished: asyncio.Future[ToolCallFinished] = asyncio.get_running_loop().create_future()

    def on_event(_: str | None, event: Event) -> None:
        if isinstance(event, ToolCallFinished):
            finished.set_result(event)

    async with ToolBridge(transport, [wait_forever], extension="loaded") as bridge:
        bridge.add_tool_listener(on_event)
        transport.kernel_says("calls", calls((5, "wait_forever", {})))
        await running.wait()
        transport.kernel_says("cancelled", {"ids": [5, 99], "reason": "interrupt"})
        record = (await finished).call
        assert cancelled.is_set()
    assert "results" not in transport.kinds()
    assert record.id == 5 and not record.ok and record.error == "cancelled"


async def test_closing_cancels_the_tools_still_running(transport: FakeTransport) -> None:
    cancelled = asyncio.Event()
    running = asyncio.Event()

    async def wait_forever() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async with ToolBridge(transport, [wait_forever], extension="loaded"):
        transport.kernel_says("calls", calls((1, "wait_forever", {})))
        await running.wait()
    assert cancelled.is_set()


async def test_a_bridge_refuses_what_is_not_a_kernel() -> None:
    with pytest.raises(
        TypeError, match="ToolBridge cannot reach a kernel through int; pass a KernelManager"
    ):
        ToolBridge(42)  # type: ignore[arg-type]


# -- where sync tools run ------------------------------------------------------------


async def test_a_sync_tool_whose_call_is_cancelled_frees_its_thread_slot_at_once() -> None:
    threads = ToolThreads(1)
    loop = asyncio.get_running_loop()
    running, release = asyncio.Event(), threading.Event()

    def hang() -> None:
        loop.call_soon_threadsafe(running.set)
        release.wait()

    hung = asyncio.ensure_future(threads.run(hang, [], {}))
    await running.wait()
    hung.cancel()
    try:
        # The only slot is free again although the hung thread still runs.
        assert await threads.run(lambda a, b: a + b, [1], {"b": 2}) == (True, 3)
    finally:
        release.set()


async def test_whatever_a_sync_tool_raises_comes_back_as_its_outcome() -> None:
    def leave() -> None:
        raise SystemExit(3)

    ok, raised = await ToolThreads().run(leave, [], {})
    assert not ok and isinstance(raised, SystemExit) and raised.code == 3


def test_a_thread_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="tool_threads must be at least 1"):
        ToolThreads(0)
