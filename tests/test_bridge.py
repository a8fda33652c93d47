"""ToolBridge: serving tools to a kernel you manage yourself."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import Event, ExtensionNotLoadedError, ToolBridge, ToolCallStarted, __version__
from progtc_kernel.kernels.local import ZmqTransport
from progtc_kernel.protocol import PROTOCOL_VERSION

from .conftest import TOOLS

# Routes, the host's disconnects and a kernel's exit differ by ipykernel line.
pytestmark = pytest.mark.ipykernel_lines


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
    own_kernel: AsyncKernelManager,
    own_client: Any,
) -> None:
    async with ToolBridge(own_kernel, tools=TOOLS) as bridge:
        assert bridge.kernel_info is not None
        out = await run_cell(
            own_client, ("from tools import get_weather\nprint(await get_weather('Porto', 'PT'))")
        )
    assert out == "Weather in Porto, PT: Sunny, 22°C\n"


async def test_a_kernel_that_served_tools_exits_when_asked(
    own_kernel: AsyncKernelManager,
    own_client: Any,
) -> None:
    async with ToolBridge(own_kernel, tools=TOOLS):
        assert await run_cell(own_client, "import tools; print(tools.__all__)") != ""
    process = own_kernel.provisioner.process  # type: ignore[union-attr]
    await own_kernel.shutdown_kernel()  # a shutdown request; SIGTERM if it does not exit
    assert process.returncode == 0  # it exited by itself, not by a signal


async def test_bridge_accepts_a_client_or_a_connection_file(
    own_kernel: AsyncKernelManager,
    own_client: Any,
) -> None:
    client = own_client
    async with ToolBridge(client, tools=TOOLS):
        out = await run_cell(client, "import tools\nprint(tools.get_weather('Bonn', 'DE'))")
    assert out == "Weather in Bonn, DE: Sunny, 22°C\n"
    async with ToolBridge(own_kernel.connection_file, tools=TOOLS):
        out = await run_cell(client, "import tools\nprint(tools.get_weather('Gent', 'BE'))")
    assert out == "Weather in Gent, BE: Sunny, 22°C\n"


async def test_host_closing_fails_pending_calls(
    own_kernel: AsyncKernelManager,
    own_client: Any,
) -> None:
    running = asyncio.Event()

    async def slow() -> None:
        running.set()
        await asyncio.Event().wait()

    bridge = ToolBridge(own_kernel, tools=[slow], tool_call_timeout=None)
    await bridge.start()
    cell = asyncio.create_task(
        run_cell(
            own_client,
            (
                "import tools\n"
                "try:\n"
                "    await tools.slow()\n"
                "except tools.ToolError as e:\n"
                "    print(type(e).__name__, e.message)\n"
            ),
        )
    )
    await running.wait()
    await bridge.close()
    out = await asyncio.wait_for(cell, 30)
    assert out == "HostDisconnectedError the host closed the connection\n"


async def test_with_no_host_a_call_names_its_tool(
    own_kernel: AsyncKernelManager, own_client: Any
) -> None:
    async with ToolBridge(own_kernel, tools=TOOLS):
        pass  # the extension is loaded, and no host is left
    out = await run_cell(
        own_client,
        (
            "from tools import get_weather\n"
            "import tools\n"
            "for call in (lambda: get_weather('x', 'y'), tools.anything):\n"
            "    try:\n"
            "        call()\n"
            "    except tools.HostDisconnectedError as e:\n"
            "        print(e.tool, '|', e.message)\n"
        ),
    )
    assert out.splitlines() == [
        "get_weather | no host is serving tools to this kernel; connect one with "
        "progtc_kernel.ToolKernel or progtc_kernel.ToolBridge",
        "anything | no host is serving tools to this kernel; connect one with "
        "progtc_kernel.ToolKernel or progtc_kernel.ToolBridge",
    ]


async def test_a_host_whose_connection_drops_is_noticed_at_once(
    own_kernel: AsyncKernelManager,
    own_client: Any,
) -> None:
    running = asyncio.Event()

    async def slow() -> None:
        running.set()
        await asyncio.Event().wait()

    bridge = ToolBridge(own_kernel, tools=[slow], tool_call_timeout=None)
    await bridge.start()
    cell = asyncio.create_task(
        run_cell(
            own_client,
            (
                "import tools\n"
                "try:\n"
                "    await tools.slow()\n"
                "except tools.HostDisconnectedError as e:\n"
                "    print(e.message)\n"
            ),
        )
    )
    await running.wait()
    await bridge.transport.close()  # sockets closed without a goodbye, as in a crash
    out = await asyncio.wait_for(cell, 30)  # tool_call_timeout=None: it would wait forever
    assert out == "the host disconnected (its connection to the kernel closed)\n"
    bridge.cancel_calls()


async def test_a_killed_host_is_forgotten_at_once(
    own_kernel: AsyncKernelManager,
    own_client: Any,
    tmp_path: Path,
) -> None:
    host = tmp_path / "host.py"
    host.write_text(
        textwrap.dedent("""\
        import asyncio, sys
        from progtc_kernel import ToolBridge

        async def who() -> str:
            return "A"

        async def main() -> None:
            async with ToolBridge(sys.argv[1], tools={"who": who}, tool_call_timeout=None):
                print("serving", flush=True)
                await asyncio.Event().wait()

        asyncio.run(main())
        """)
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(host), own_kernel.connection_file, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 60) == b"serving\n"
    assert await run_cell(own_client, "import tools\nprint(tools.who())") == "A\n"
    process.kill()  # SIGKILL: no goodbye
    await process.wait()
    async with ToolBridge(own_kernel, tools={"who": lambda: "B"}):
        assert await run_cell(own_client, "import tools\nprint(tools.who())") == "B\n"
    # B left cleanly and A is dead: the call fails at once instead of waiting on A
    # (whose tool_call_timeout was None: it would hang).
    out = await run_cell(
        own_client,
        (
            "import tools\n"
            "try:\n"
            "    tools.who()\n"
            "except tools.HostDisconnectedError as e:\n"
            "    print(e.message)\n"
        ),
    )
    assert out.startswith("no host is serving tools to this kernel")


async def test_calls_go_to_the_host_whose_client_ran_the_cell(
    own_kernel: AsyncKernelManager,
) -> None:
    def who() -> str:
        return "first"

    def who_else() -> str:
        return "second"

    async with (
        ToolBridge(own_kernel, tools={"who": who}) as first,
        ToolBridge(own_kernel, tools={"who": who_else}) as second,
    ):
        for bridge, expected in ((first, "first"), (second, "second")):
            done = asyncio.get_running_loop().create_future()
            msg_id = bridge.transport.send(
                "shell",
                "execute_request",
                {
                    "code": "import tools\nprint(tools.who())",
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                },
            )

            printed: list[str] = []

            def on_message(
                channel: str,
                msg: dict[str, Any],
                done: Any = done,
                msg_id: str = msg_id,
                printed: list[str] = printed,
            ) -> None:
                if msg["parent_header"].get("msg_id") != msg_id or done.done():
                    return
                if msg["header"]["msg_type"] == "stream":
                    printed.append(msg["content"]["text"])  # a print may come in pieces
                elif (
                    msg["header"]["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"
                ):
                    done.set_result("".join(printed))

            bridge.add_message_listener(on_message)
            assert await asyncio.wait_for(done, 30) == expected + "\n"


async def test_a_kernel_without_progtc_kernel_is_a_clear_error(
    own_kernel: AsyncKernelManager,
) -> None:
    with pytest.raises(ExtensionNotLoadedError, match="--ext=progtc_kernel"):
        async with ToolBridge(own_kernel, tools=TOOLS, extension="loaded"):
            pass


# -- forged and garbage messages from a second client holding the key ----------------


async def forge(
    own_kernel: AsyncKernelManager, bridge: ToolBridge, messages: list[tuple[dict[str, Any], bytes]]
) -> None:
    """Send comm messages on the bridge's comm from another client, on control, and
    wait until the kernel has handled them (control answers in order)."""
    forger = ZmqTransport.connect(dict(own_kernel.get_connection_info()))
    handled = asyncio.get_running_loop().create_future()
    probe = ""

    def on_message(channel: str, msg: dict[str, Any]) -> None:
        if (
            channel == "control"
            and msg["parent_header"].get("msg_id") == probe
            and not handled.done()
        ):
            handled.set_result(None)

    await forger.start(on_message)
    try:
        for data, body in messages:
            forger.send(
                "control", "comm_msg", {"comm_id": bridge.comm_id, "data": data}, buffers=[body]
            )
        probe = forger.send("control", "kernel_info_request", {})
        await asyncio.wait_for(handled, 30)
    finally:
        await forger.close()


@pytest.mark.parametrize(
    ("data", "entry", "message"),
    [
        (
            {"v": PROTOCOL_VERSION, "type": "results"},
            {"ok": False, "error": {}},
            "the host sent a malformed result (unknown error kind None)",
        ),
        (
            {"v": PROTOCOL_VERSION, "type": "results"},
            {"ok": True},
            "the host sent a malformed result (a successful result has no 'value')",
        ),
        (
            {"v": 99, "type": "results"},
            {"ok": True, "value": 1},
            f"the host speaks progtc_kernel protocol 99, this kernel's extension (progtc-kernel "
            f"{__version__}) speaks {PROTOCOL_VERSION}",
        ),
        (
            {"v": PROTOCOL_VERSION, "type": "results"},
            {"ok": False, "error": {"kind": ["tool"], "type": "ValueError", "message": "m"}},
            "the host sent a malformed result (unknown error kind ['tool'])",
        ),
    ],
    ids=["error-without-fields", "ok-without-value", "version-99", "unhashable-kind"],
)
async def test_a_bad_result_fails_its_call_instead_of_orphaning_it(
    own_kernel: AsyncKernelManager,
    own_client: Any,
    data: dict[str, Any],
    entry: dict[str, Any],
    message: str,
) -> None:
    async def stall() -> None:
        await asyncio.Event().wait()

    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    async with ToolBridge(own_kernel, tools=[stall], tool_call_timeout=None) as bridge:

        def on_tool_event(parent: str | None, event: Event) -> None:
            if isinstance(event, ToolCallStarted) and not started.done():
                started.set_result(event.id)

        bridge.add_tool_listener(on_tool_event)
        cell = asyncio.create_task(
            run_cell(
                own_client,
                (
                    "import tools\n"
                    "try:\n"
                    "    await tools.stall()\n"
                    "except tools.ToolError as e:\n"
                    "    print(e.error_type, '|', e.message)\n"
                ),
            )
        )
        call_id = await started
        await forge(
            own_kernel,
            bridge,
            [(data, json.dumps({"results": [{"id": call_id, **entry}]}).encode())],
        )
        out = await asyncio.wait_for(cell, 30)
    assert out.startswith("ProtocolError | " + message)


async def test_garbage_is_logged_once_per_kind_and_counted(
    own_kernel: AsyncKernelManager,
    own_client: Any,
) -> None:
    chaos = random.Random(7)
    kinds = ["results", "tools", "queued", "close-ish", "calls", ""]
    garbage = []
    for _ in range(400):
        data = {"v": chaos.choice([1, 1, 1, 0, 99, "x"]), "type": chaos.choice(kinds)}
        body = chaos.choice(
            [
                chaos.randbytes(chaos.randint(0, 40)),
                json.dumps(
                    chaos.choice(
                        [
                            [],
                            3,
                            "s",
                            {"results": 5},
                            {"results": [7, {}]},
                            {"results": [{"id": "x"}]},
                            {"ids": "no"},
                        ]
                    )
                ).encode(),
            ]
        )
        garbage.append((data, body))
    async with ToolBridge(own_kernel, tools=TOOLS) as bridge:
        await run_cell(
            own_client,
            (
                "import logging\n"
                "records = []\n"
                "handler = logging.Handler()\n"
                "handler.emit = records.append\n"
                "logging.getLogger('progtc_kernel').addHandler(handler)\n"
            ),
        )
        await forge(own_kernel, bridge, garbage)
        out = await run_cell(
            own_client,
            (
                "from progtc_kernel.kernel_side import extension\n"
                "counts = extension.current().bad_messages.counts\n"
                "print(len(records), len(counts), any(r.exc_info for r in records))\n"
                "import tools\n"
                "print(tools.get_weather('Oslo', 'NO'))\n"
            ),
        )
    logged, kinds_seen, with_traceback = out.splitlines()[0].split()
    assert int(logged) == int(kinds_seen) <= 8  # one line per kind, however many came
    assert with_traceback == "False"
    assert out.splitlines()[1] == "Weather in Oslo, NO: Sunny, 22°C"  # still serving


# -- a second client holding the key attacks a kernel that a ToolKernel serves -------

CAPTURE_LOGS = (
    "import logging\n"
    "records = []\n"
    "handler = logging.Handler(logging.WARNING)\n"
    "handler.emit = records.append\n"
    "for logger in (logging.getLogger(), get_ipython().kernel.log):  # root: ours too\n"
    "    logger.addHandler(handler)\n"
)

REPORT_LOGS = (
    "from progtc_kernel.kernel_side import extension\n"
    "counts = extension.current().bad_messages.counts\n"
    "ours = [r for r in records if r.name == 'progtc_kernel']\n"
    "print(sum(counts.values()), len(counts), len(ours),\n"
    "      [r.getMessage()[:80] for r in records if r.exc_info or r.name != 'progtc_kernel'])\n"
)


def malformed_comm_msgs(comm_id: str, count: int, seed: int) -> list[tuple[dict[str, Any], bytes]]:
    """comm_msgs to the host's comm that no host sends: data that is not a dict, a
    version that is not an int, bodies that are not JSON objects or nest 5,000 deep,
    results and tool lists of the wrong shapes (never a valid ``tools`` or ``close``,
    which would legitimately change what the kernel serves)."""
    chaos = random.Random(seed)
    deep = b"[" * 5000 + b"]" * 5000
    datas: list[Any] = [
        "oops",
        [1],
        None,
        7,
        {"v": "1", "type": "results"},
        {"v": 1.5, "type": "results"},
        {"v": [1], "type": "results"},
        {"v": 1, "type": 5},
        {"type": "results"},
        {"v": 1, "type": "results"},
        {"v": 1, "type": "tools"},
        {"v": 1, "type": "queued"},
    ]
    bodies = [
        deep,
        b'{"results": ' + deep + b"}",
        b"",
        b"\xff\xfe",
        b"[]",
        b'"s"',
        b'{"results": 5}',
        b'{"results": [7, {}, {"id": "x"}, {"id": []}]}',
        b'{"results": [{"id": 1, "ok": false, "error": {"kind": ["tool"]}}]}',
        b'{"tools": "x"}',
        b'{"tools": [{"name": 5}]}',
        b'{"tools": [{"name": "x", "parameters": "zz"}]}',
        b'{"tools": [], "tool_timeout": "soon"}',
        b'{"ids": "no"}',
        b'{"ids": [[1]]}',
    ]
    return [
        ({"comm_id": comm_id, "data": chaos.choice(datas)}, chaos.choice(bodies))
        for _ in range(count)
    ]


class SecondClient:
    """Another client holding the kernel's key: jupyter_client's own client and
    Session, signing every message it sends over ZMQ."""

    def __init__(self, connection_info: dict[str, Any]) -> None:
        self.client = AsyncKernelClient()
        self.client.load_connection_info(connection_info)  # type: ignore[arg-type]
        self.client.start_channels()

    def send(self, channel: str, content: dict[str, Any], buffers: list[bytes]) -> None:
        socket = getattr(self.client, f"{channel}_channel").socket
        self.client.session.send(socket, "comm_msg", content, buffers=buffers)

    async def kernel_info(self, channel: str) -> dict[str, Any]:
        """Ask for kernel_info on a channel and wait for the answer: the kernel handles
        a channel's messages in order, so all sent before it have been handled."""
        msg = self.client.session.msg("kernel_info_request")
        getattr(self.client, f"{channel}_channel").send(msg)
        while True:
            reply = await (
                self.client.get_shell_msg(timeout=120)
                if channel == "shell"
                else self.client.get_control_msg(timeout=120)
            )
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                return reply["content"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.client.stop_channels()


@pytest.mark.parametrize("channel", ["shell", "control"])
async def test_malformed_messages_from_a_second_client_are_dropped_and_the_kernel_serves(
    make_kernel: Any,
    channel: str,
) -> None:
    async with make_kernel(TOOLS, timeout=120) as kernel:
        assert (await kernel.execute(CAPTURE_LOGS)).ok
        attacker = SecondClient(kernel.kernel_manager.get_connection_info())
        try:
            for content, body in malformed_comm_msgs(kernel.bridge.comm_id, 300, seed=14):
                attacker.send(channel, content, [body])
            info = await attacker.kernel_info(channel)
            assert info["status"] == "ok"
            assert (await attacker.kernel_info("shell"))["status"] == "ok"
        finally:
            attacker.close()
        result = await kernel.execute(
            "import asyncio, tools\n"
            "print(await tools.get_weather('Oslo', 'NO'))\n"
            "def run():\n"
            "    return tools.search_database('inns', limit=1)\n"
            "print(run())\n"
        )
        assert result.stdout == (
            "Weather in Oslo, NO: Sunny, 22°C\n[{'id': 0, 'name': 'inns 0'}]\n"
        ), result.error
        report = await kernel.execute(REPORT_LOGS)
    dropped, kinds, logged, others = report.stdout.split(maxsplit=3)
    assert int(dropped) >= 300  # every one dropped and counted (some twice: two faults)
    assert int(logged) == int(kinds) <= 8  # one line per kind, however many came
    assert others.strip() == "[]"  # nothing else logged: no traceback, ipykernel's or ours
