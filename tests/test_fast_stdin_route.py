"""Which route a call takes to its host, without a kernel: stdin (to the host alone)
only while the host has seen everything the kernel published on iopub, else iopub,
behind that output. (tests/test_stdin_route.py and tests/test_remote.py run it on real
kernels, over ZMQ and over Jupyter Server websockets.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

from progtc_kernel.kernel_side import _ipykernel
from progtc_kernel.kernel_side._ipykernel import iopub_count
from progtc_kernel.kernel_side.bridge import KernelBridge, PendingCall

pytestmark = pytest.mark.fast


class FakeSession:
    """Records what ipykernel's Session would send, and on which socket."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, str]] = []

    def send(self, stream: object, msg_or_type: Any, *args: Any, **kwargs: Any) -> None:
        msg_type = (
            msg_or_type if isinstance(msg_or_type, str) else msg_or_type["header"]["msg_type"]
        )
        self.sent.append((stream, msg_type))


class FakeKernel:
    """The attributes of an ipykernel Kernel that the count and the routes use."""

    def __init__(self) -> None:
        self.session = FakeSession()
        self.iopub_socket = object()  # what displays and comms are sent on
        self.iopub_thread = object()  # what print() output is sent on
        self.shell_stream = object()


def test_the_count_takes_every_iopub_message_a_host_orders_calls_against() -> None:
    kernel = FakeKernel()
    count = iopub_count(kernel)

    kernel.session.send(kernel.iopub_thread, "stream")
    kernel.session.send(kernel.iopub_socket, {"header": {"msg_type": "display_data"}})
    kernel.session.send(kernel.iopub_socket, "comm_msg")
    kernel.session.send(kernel.iopub_socket, "status")  # no host orders calls by these
    kernel.session.send(kernel.iopub_socket, "execute_input")
    kernel.session.send(kernel.shell_stream, "execute_reply")  # not iopub

    assert count.value == 3
    assert len(kernel.session.sent) == 6  # every message still sent
    assert iopub_count(kernel) is count  # one per kernel, however often it is asked


@pytest.fixture
async def bridge(monkeypatch: pytest.MonkeyPatch) -> KernelBridge:
    """A host's kernel bridge that said hello and listens on its stdin connection."""
    kernel = FakeKernel()

    def on_iopub(kernel: FakeKernel, *args: Any) -> None:
        kernel.session.send(kernel.iopub_socket, "comm_msg")

    def on_stdin(kernel: FakeKernel, *args: Any) -> bool:
        kernel.session.send("stdin", "comm_msg")
        return True

    monkeypatch.setattr(_ipykernel, "publish_comm_msg", on_iopub)
    monkeypatch.setattr(_ipykernel, "send_on_stdin", on_stdin)
    monkeypatch.setattr(_ipykernel, "flush_pending_output", lambda: None)
    bridge = KernelBridge(
        kernel, "comm", b"topic", "host", shell_replies=None, loop=asyncio.get_running_loop()
    )
    bridge.iopub = iopub_count(kernel)
    bridge.host_seen = bridge.iopub.value
    bridge.stdin_identity = b"host"
    return bridge


def call(bridge: KernelBridge, call_id: int) -> tuple[PendingCall, str]:
    """Send call ``call_id``; returns it and the route it took."""
    pending = PendingCall(call_id, "echo", {}, {"header": {"msg_id": "cell"}}, bridge)
    pending.future = concurrent.futures.Future()
    bridge._in_flight[call_id] = pending
    bridge._send_calls([pending])
    stream, _ = bridge.kernel.session.sent[-1]
    return pending, "stdin" if stream == "stdin" else "iopub"


def answer(bridge: KernelBridge, call_id: int) -> None:
    assert bridge.take_results([{"id": call_id, "ok": True, "value": call_id}]) == []


async def test_calls_take_stdin_while_the_host_has_seen_all_output(
    bridge: KernelBridge,
) -> None:
    assert call(bridge, 1)[1] == "stdin"
    assert call(bridge, 2)[1] == "stdin"  # calls on stdin are not iopub output


async def test_a_call_after_output_goes_on_iopub_until_the_host_answers_one(
    bridge: KernelBridge,
) -> None:
    kernel = bridge.kernel
    kernel.session.send(kernel.iopub_thread, "stream")  # print() before the call

    assert call(bridge, 1)[1] == "iopub"  # behind the output, on the same channel
    assert call(bridge, 2)[1] == "iopub"  # call 1 may still be on its way
    answer(bridge, 1)
    assert call(bridge, 3)[1] == "iopub"  # call 2 may still be on its way
    answer(bridge, 3)  # the host has seen everything up to call 3
    assert call(bridge, 4)[1] == "stdin"


async def test_an_answer_to_a_call_on_stdin_says_nothing_of_iopub(bridge: KernelBridge) -> None:
    kernel = bridge.kernel
    _, route = call(bridge, 1)
    kernel.session.send(kernel.iopub_socket, "display_data")
    answer(bridge, 1)

    assert route == "stdin"
    assert call(bridge, 2)[1] == "iopub"


async def test_without_a_hello_every_call_goes_on_iopub(bridge: KernelBridge) -> None:
    bridge.stdin_identity = None  # the host did not ask, or has not said hello yet
    assert [call(bridge, i)[1] for i in (1, 2)] == ["iopub", "iopub"]
