"""The reply routes (progtc_kernel/kernel_side/_ipykernel.py) on every supported ipykernel line.

The other test modules run on 6.31 and the newest 7.x; this one checks, on each of
6.29, 6.30, 7.0, 7.1, 7.2 and 7.3 too, what differs between versions: which route
really carries the results (shell interception or control), awaited and blocking
calls, and interrupts during a call.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from progtc_kernel import LocalKernel, ToolKernel

from .conftest import OTHER_LINES, interrupt_during_call, kernel_env
from .test_tool_calls import interrupt_awaiting_code

LINES = (
    os.environ["PROGTC_TEST_KERNELS"].split(",")
    if os.environ.get("PROGTC_TEST_KERNELS")
    else [*OTHER_LINES, "6.31", "7"]
)

ROUTES = (
    "from progtc_kernel.kernel_side import extension\n"
    "routes = extension.current().routes\n"
    "print(*sorted(route for route, count in routes.items() if count))\n"
    "routes.clear()\n"
)


async def lookup(key: str) -> str:
    return key.upper()


@pytest.mark.parametrize("line", LINES, ids=lambda line: f"ipykernel-{line}")
async def test_replies_take_the_expected_route(line: str) -> None:
    running = asyncio.Event()

    async def stall() -> None:
        running.set()
        await asyncio.Event().wait()

    async with ToolKernel([lookup, stall], kernel=LocalKernel(python=kernel_env(line))) as kernel:
        info = kernel.bridge.kernel_info
        assert info is not None and info["ipykernel"].startswith(line)
        assert info["shell_replies"] is True  # the interception is in place, not just planned
        await kernel.execute(ROUTES)  # counts from here on

        result = await kernel.execute(
            "import asyncio, tools\n"
            "print(await asyncio.gather(*[tools.lookup(k) for k in 'abc']))\n"
        )
        assert result.stdout == "['A', 'B', 'C']\n", result.error
        assert (await kernel.execute(ROUTES)).stdout == "shell\n"  # taken off the socket

        result = await kernel.execute("import tools\nprint(tools.lookup('blocking'))")
        assert result.stdout == "BLOCKING\n", result.error
        # ipykernel 6 reads the shell socket on the main thread, which the blocking
        # call holds: its result takes the control channel. 7.x reads shell on a thread.
        expected = "control\n" if line.startswith("6.") else "shell\n"
        assert (await kernel.execute(ROUTES)).stdout == expected

        kind = await interrupt_during_call(
            kernel, "import tools\nawait tools.stall()", started=running.wait
        )
        assert kind == "cancelled"

        # An interrupt wakes a cell that awaits with no call pending (the signal
        # wakeup), and the kernel keeps its state.
        await kernel.execute("x = 1")
        error = await interrupt_awaiting_code(kernel)
        assert error is not None and error.kind == "cancelled", error
        assert (await kernel.execute("print(x)")).stdout == "1\n"
