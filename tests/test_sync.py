"""Blocking use: SyncToolKernel and run(), also from inside a running event loop."""

from __future__ import annotations

import asyncio

from progtc_kernel import SyncToolKernel, run

from .conftest import TOOLS


def test_sync_kernel_in_a_script(kernel_python: str) -> None:
    with SyncToolKernel(TOOLS, python=kernel_python) as kernel:
        kernel.execute("import tools\nhits = await tools.search_database('spa', limit=2)")
        result = kernel.execute("print(len(hits))")
        assert result.stdout == "2\n"
        kernel.reset()
        assert not kernel.execute("hits").ok


async def test_run_works_inside_a_running_event_loop(newest_kernel_python: str) -> None:
    # As in a Jupyter notebook, where a loop is already running.
    assert asyncio.get_running_loop().is_running()
    result = run("from tools import get_weather\nprint(await get_weather('Kyiv', 'UA'))",
                 TOOLS, python=newest_kernel_python)
    assert result.stdout == "Weather in Kyiv, UA: Sunny, 22°C\n"
    assert [call.name for call in result.tool_calls] == ["get_weather"]
