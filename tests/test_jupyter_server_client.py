"""The Jupyter Server client on its own: URLs, framings, servers that are not there.

No kernel is needed here; the servers in these tests are absent or mute on purpose.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from progtc_kernel import JupyterServer, RemoteKernel, ServerError, ToolKernel
from progtc_kernel.kernels.jupyter_server.frames import decode_frame, legacy_frame, v1_frame

pytestmark = pytest.mark.fast


def test_a_url_jupyter_printed_gives_base_url_and_token() -> None:
    server = JupyterServer("http://127.0.0.1:8888/lab?token=abc123")
    assert (server.url, server.token) == ("http://127.0.0.1:8888/", "abc123")
    behind_a_hub = JupyterServer("https://hub.example.org/user/ada/", token="t")
    assert (behind_a_hub.url, behind_a_hub.token) == ("https://hub.example.org/user/ada/", "t")


def test_a_url_that_is_not_a_server_says_what_to_give() -> None:
    with pytest.raises(ValueError, match=r"http://127\.0\.0\.1:8888"):
        JupyterServer("127.0.0.1:8888")


def test_e2b_sends_the_traffic_token_over_https() -> None:
    class Sandbox:
        traffic_access_token = "secret"

        def get_host(self, port: int) -> str:
            return f"{port}-sbx.e2b.app"

    server = JupyterServer.e2b(Sandbox())
    assert server.url == "https://8888-sbx.e2b.app/"
    assert server.headers == {"E2B-Traffic-Access-Token": "secret"}
    assert server.token == ""


@pytest.mark.parametrize("buffers", [[], [b'{"calls":[]}', b"\x00\xff raw"]])
def test_both_framings_carry_a_message_and_its_buffers(buffers: list[bytes]) -> None:
    header = {"msg_id": "m1", "msg_type": "comm_msg", "session": "s"}
    parts = [
        json.dumps(part).encode()
        for part in (header, {"msg_id": "p"}, {}, {"comm_id": "c", "data": {"v": 1}})
    ]
    sent = {
        "header": header,
        "parent_header": {"msg_id": "p"},
        "metadata": {},
        "content": {"comm_id": "c", "data": {"v": 1}},
    }

    channel, msg = decode_frame(v1_frame("iopub", [*parts, *buffers]), legacy=False)
    assert channel == "iopub"
    assert {key: msg[key] for key in sent} == sent
    assert [bytes(buffer) for buffer in msg["buffers"]] == buffers

    frame, binary = legacy_frame("control", parts, buffers)
    assert binary == bool(buffers)
    channel, msg = decode_frame(frame if binary else frame.decode(), legacy=True)
    assert channel == "control"
    assert {key: msg[key] for key in sent} == sent
    assert [bytes(buffer) for buffer in msg["buffers"]] == buffers


async def test_nothing_listening_is_reported_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ServerError, match="nothing answers at") as caught:
        async with ToolKernel(
            kernel=RemoteKernel(JupyterServer(f"http://127.0.0.1:{port}", token="t"))
        ):
            pass
    assert caught.value.status is None


@pytest.fixture
def mute_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_a_server_that_does_not_answer_is_reported_within_the_request_timeout(
    mute_port: int,
) -> None:
    server = JupyterServer(f"http://127.0.0.1:{mute_port}", token="t", request_timeout=1)
    with pytest.raises(ServerError, match="did not answer within 1 s"):
        async with ToolKernel(kernel=RemoteKernel(server)):
            pass


def test_kernel_id_without_a_server_is_refused() -> None:
    with pytest.raises(TypeError, match="server=JupyterServer"):
        ToolKernel(kernel_id="abc")  # type: ignore[arg-type]
