"""The reply routes (progtc_kernel/kernel/_ipykernel.py) on every supported ipykernel line.

The other test modules run on 6.31 and the newest 7.x; this one checks, on each of
6.29, 6.30, 7.0, 7.1, 7.2 and 7.3 too, what differs between versions: the shell
interception, awaited and blocking calls, and interrupts during a call.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from progtc_kernel import ToolKernel

from .conftest import OTHER_LINES, interrupt_during_call, kernel_env

LINES = (os.environ["PROGTC_TEST_KERNELS"].split(",") if os.environ.get("PROGTC_TEST_KERNELS")
         else list(OTHER_LINES))


async def lookup(key: str) -> str:
    return key.upper()


async def stall() -> None:
    await asyncio.sleep(30)


@pytest.mark.parametrize("line", LINES, ids=lambda line: f"ipykernel-{line}")
async def test_replies_reach_running_cells(line: str) -> None:
    async with ToolKernel([lookup, stall], python=kernel_env(line)) as kernel:
        info = kernel.bridge.kernel_info
        assert info is not None and info["ipykernel"].startswith(line)
        assert info["shell_replies"] is True

        result = await kernel.execute(
            "import asyncio, tools\n"
            "def run():\n"
            "    return tools.lookup('blocking')\n"
            "print(await asyncio.gather(*[tools.lookup(k) for k in 'abc']))\n"
            "print(run())\n"
            "await asyncio.sleep(0)\n"
            "print(tools.lookup('plain'))\n")
        assert result.stdout == "['A', 'B', 'C']\nBLOCKING\nPLAIN\n", result.error

        delay, kind = await interrupt_during_call(kernel, "import tools\nawait tools.stall()")
        assert (kind, delay < 0.5) == ("cancelled", True)
