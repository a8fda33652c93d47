"""Timeouts on a real kernel: ``None`` is no limit, ``USE_DEFAULT`` is the kernel's
own run timeout, and the agent toolset's tool-call timeout reaches the script as a
``ToolTimeoutError`` it can catch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from progtc_kernel import USE_DEFAULT, ProgrammaticToolset, Timeout, ToolKernel

# The kernel's run timeout in these tests; the code below runs for longer than that.
RUN = 1.0


async def nap(seconds: float) -> str:
    """Take a while: longer than the kernel's run timeout."""
    await asyncio.sleep(seconds)  # the work itself, not a wait for something to happen
    return "rested"


async def hang() -> None:
    """Never return."""
    await asyncio.Event().wait()


async def test_none_is_no_limit_and_use_default_is_the_kernels_run_timeout(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async with make_kernel([nap], timeout=Timeout(RUN)) as kernel:
        code = f"import tools\nprint(await tools.nap({3 * RUN}))"
        default = await kernel.execute(code, timeout=USE_DEFAULT)
        assert default.error is not None and default.error.kind == "timeout", default.error

        unlimited = await kernel.execute(code, timeout=None)
        assert unlimited.ok, unlimited.error
        assert unlimited.stdout == "rested\n"


async def test_the_toolsets_tool_call_timeout_fails_a_call_that_never_returns() -> None:
    # The toolset's own kernel (on this interpreter) gets the tool-call timeout.
    limits = Timeout(60, tool_call=RUN)
    async with ProgrammaticToolset([hang], timeout=limits) as toolset:
        answer = await toolset.execute_tool_script(
            """\
from tools import hang, ToolTimeoutError

async def run():
    try:
        await hang()
    except ToolTimeoutError as e:
        return {"timed_out": str(e)}
    return {"timed_out": None}
"""
        )
    assert json.loads(answer) == {
        "timed_out": (
            f"tool 'hang' failed: TimeoutError: no result within {RUN:g} s (the tool-call timeout)"
        )
    }
