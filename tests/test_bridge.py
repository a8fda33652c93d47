"""ToolBridge: serving tools to a kernel you manage yourself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import ExtensionNotLoadedError, ToolBridge
from progtc_kernel.host.tool_kernel import _single_spec

from .conftest import TOOLS


@pytest.fixture
async def own_kernel(kernel_python: str) -> AsyncIterator[AsyncKernelManager]:
    """A plain kernel, started without the extension and running, as a user would have."""
    km = AsyncKernelManager(kernel_spec_manager=_single_spec(kernel_python),
                            kernel_name="progtc")
    await km.start_kernel()
    waiter = km.client()
    waiter.start_channels()
    await waiter.wait_for_ready()
    waiter.stop_channels()
    try:
        yield km
    finally:
        await km.shutdown_kernel(now=True)


@pytest.fixture
async def own_client(own_kernel: AsyncKernelManager) -> AsyncIterator[Any]:
    """The user's own client on that kernel."""
    client = own_kernel.client()
    client.start_channels()
    await client.wait_for_ready()
    try:
        yield client
    finally:
        client.stop_channels()


async def run_cell(client: Any, code: str, timeout: float = 30) -> str:
    """Run code on the user's own client; return its stdout."""
    out: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

    await client.execute_interactive(code, output_hook=collect, timeout=timeout)
    return "".join(out)


async def test_serve_tools_to_your_own_kernel(
    own_kernel: AsyncKernelManager, own_client: Any,
) -> None:
    async with ToolBridge(own_kernel, tools=TOOLS) as bridge:
        assert bridge.kernel_info is not None
        out = await run_cell(own_client, (
            "from tools import get_weather\n"
            "print(await get_weather('Porto', 'PT'))"))
    assert out == "Weather in Porto, PT: Sunny, 22°C\n"


async def test_bridge_accepts_a_client_or_a_connection_file(
    own_kernel: AsyncKernelManager, own_client: Any,
) -> None:
    client = own_client
    async with ToolBridge(client, tools=TOOLS):
        out = await run_cell(client, "import tools\nprint(tools.get_weather('Bonn', 'DE'))")
    assert out == "Weather in Bonn, DE: Sunny, 22°C\n"
    async with ToolBridge(own_kernel.connection_file, tools=TOOLS):
        out = await run_cell(client, "import tools\nprint(tools.get_weather('Gent', 'BE'))")
    assert out == "Weather in Gent, BE: Sunny, 22°C\n"


async def test_host_closing_fails_pending_calls(
    own_kernel: AsyncKernelManager, own_client: Any,
) -> None:
    async def slow() -> None:
        await asyncio.sleep(30)

    client = own_client
    bridge = ToolBridge(own_kernel, tools=[slow], tool_timeout=None)
    await bridge.start()
    cell = asyncio.create_task(run_cell(client, (
        "import tools\n"
        "try:\n"
        "    await tools.slow()\n"
        "except tools.ToolError as e:\n"
        "    print(type(e).__name__, e.message)\n")))
    await asyncio.sleep(0.5)
    await bridge.close()
    out = await asyncio.wait_for(cell, 5)
    assert out == "HostDisconnectedError the host closed the connection\n"
    out = await run_cell(client, "import tools\ntools.get_weather('x', 'y')")
    assert "no host is serving tools" in out


async def test_a_vanished_host_is_noticed_through_the_call_timeout(
    own_kernel: AsyncKernelManager, own_client: Any,
) -> None:
    async def slow() -> None:
        await asyncio.sleep(30)

    bridge = ToolBridge(own_kernel, tools=[slow], tool_timeout=1)
    await bridge.start()
    cell = asyncio.create_task(run_cell(own_client, (
        "import tools\n"
        "try:\n"
        "    await tools.slow()\n"
        "except TimeoutError as e:\n"
        "    print(type(e).__name__)\n")))
    await asyncio.sleep(0.3)
    await bridge.transport.close()  # gone without a word, as a crashed host would be
    assert await asyncio.wait_for(cell, 5) == "ToolTimeoutError\n"


async def test_calls_go_to_the_host_whose_client_ran_the_cell(
    own_kernel: AsyncKernelManager,
) -> None:
    def who() -> str:
        return "first"

    def who_else() -> str:
        return "second"

    async with ToolBridge(own_kernel, tools={"who": who}) as first, \
            ToolBridge(own_kernel, tools={"who": who_else}) as second:
        for bridge, expected in ((first, "first"), (second, "second")):
            done = asyncio.get_running_loop().create_future()
            msg_id = bridge.transport.send("shell", "execute_request", {
                "code": "import tools\nprint(tools.who())", "silent": False,
                "store_history": False, "user_expressions": {}, "allow_stdin": False})

            def on_message(channel: str, msg: dict[str, Any], done: Any = done,
                           msg_id: str = msg_id) -> None:
                if (msg["header"]["msg_type"] == "stream" and not done.done()
                        and msg["parent_header"].get("msg_id") == msg_id):
                    done.set_result(msg["content"]["text"])

            bridge.add_message_listener(on_message)
            assert await asyncio.wait_for(done, 10) == expected + "\n"


async def test_a_kernel_without_progtc_kernel_is_a_clear_error(
    own_kernel: AsyncKernelManager,
) -> None:
    with pytest.raises(ExtensionNotLoadedError, match="--ext=progtc_kernel"):
        async with ToolBridge(own_kernel, tools=TOOLS, load_extension=False):
            pass
