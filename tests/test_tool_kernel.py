"""ToolKernel: running code, its results, its state and its failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from progtc_kernel import (
    DisplayOutput,
    ExecutionError,
    ExecutionFinished,
    StreamOutput,
    ToolCallFinished,
    ToolCallStarted,
    ToolKernel,
)

from .conftest import search_database


async def test_result_holds_stdout_stderr_and_rich_outputs(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "import sys\n"
        "from IPython.display import display, HTML\n"
        "print('out')\n"
        "print('err', file=sys.stderr)\n"
        "display(HTML('<b>bold</b>'))\n"
        "6 * 7\n")
    assert result.ok and result.error is None
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    html, value = result.outputs
    assert (html.kind, html.data["text/html"]) == ("display_data", "<b>bold</b>")
    assert (value.kind, value.text) == ("execute_result", "42")
    assert result.duration > 0
    assert result.execution_count is not None


async def test_images_arrive_as_mime_bundles(kernel: ToolKernel) -> None:
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
           "60e6kgAAAABJRU5ErkJggg==")
    result = await kernel.execute(
        "import base64\nfrom IPython.display import Image, display\n"
        f"display(Image(data=base64.b64decode('{png}'), format='png'))\n")
    [image] = result.outputs
    assert image.data["image/png"].strip() == png


async def test_display_updates_replace_the_shown_output(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "from IPython.display import display\n"
        "handle = display('loading', display_id=True)\n"
        "handle.update('done')\n")
    [output] = result.outputs
    assert output.text == "'done'"


async def test_state_persists_between_executions(kernel: ToolKernel) -> None:
    await kernel.execute("import tools\ncounter = 41\nw = await tools.get_weather('Bern', 'CH')")
    result = await kernel.execute("counter += 1\nprint(counter, w)")
    assert result.stdout == "42 Weather in Bern, CH: Sunny, 22°C\n"


async def test_reset_clears_state_but_keeps_tools(kernel: ToolKernel) -> None:
    await kernel.execute("secret = 1")
    await kernel.reset()
    result = await kernel.execute("print('secret' in globals())\n"
                                  "from tools import get_weather\n"
                                  "print(await get_weather('Riga', 'LV'))")
    assert result.stdout == "False\nWeather in Riga, LV: Sunny, 22°C\n"


async def test_syntax_errors(kernel: ToolKernel) -> None:
    result = await kernel.execute("print('unclosed'")
    assert not result.ok and result.error is not None
    assert result.error.kind == "syntax"
    assert result.error.ename == "SyntaxError"
    with pytest.raises(ExecutionError, match="syntax: SyntaxError"):
        result.raise_for_error()


async def test_runtime_errors_keep_output_and_a_clean_traceback(kernel: ToolKernel) -> None:
    result = await kernel.execute("print('before')\ndef f():\n    return 1 / 0\nf()")
    assert result.stdout == "before\n"
    assert result.error is not None
    assert (result.error.kind, result.error.ename) == ("runtime", "ZeroDivisionError")
    assert "return 1 / 0" in result.error.traceback
    assert "\x1b[" not in result.error.traceback


async def test_tools_can_change_per_execution(kernel: ToolKernel) -> None:
    def shout(text: str) -> str:
        return text.upper()

    result = await kernel.execute("import tools\nprint(dir(tools))\n"
                                  "print(await tools.shout('hi'))", tools=[shout])
    errors = ["HostDisconnectedError", "ToolArgumentError", "ToolError", "ToolTimeoutError"]
    assert result.stdout == f"{[*errors, 'shout']}\nHI\n"
    result = await kernel.execute("import tools\nprint(dir(tools))")
    assert result.stdout == f"{[*errors, 'fail', 'get_weather', 'search_database']}\n"


async def test_tools_as_a_mapping_name_them(make_kernel: Callable[..., ToolKernel]) -> None:
    async with make_kernel({"double": lambda x: 2 * x}) as kernel:
        result = await kernel.execute("from tools import double\nprint(await double(21))")
    assert result.stdout == "42\n"


async def test_stream_yields_live_events_in_order(kernel: ToolKernel) -> None:
    events = [event async for event in kernel.stream(
        "import sys, tools\n"
        "print('one', flush=True)\n"
        "await tools.get_weather('Nice', 'FR')\n"
        "print('two', file=sys.stderr)\n"
        "from IPython.display import display\n"
        "display({'a': 1}, raw=False)\n")]
    kinds = [type(e) for e in events]
    assert kinds == [StreamOutput, ToolCallStarted, ToolCallFinished, StreamOutput,
                     DisplayOutput, ExecutionFinished]
    started = events[1]
    assert isinstance(started, ToolCallStarted)
    assert (started.name, started.arguments) == ("get_weather", {"city": "Nice",
                                                                 "country": "FR"})
    finished = events[-1]
    assert isinstance(finished, ExecutionFinished) and finished.result.ok


async def test_timeout_interrupts_and_keeps_partial_output(kernel: ToolKernel) -> None:
    started = time.monotonic()
    result = await kernel.execute("import time\nprint('partial', flush=True)\ntime.sleep(30)",
                                  timeout=1)
    assert time.monotonic() - started < 5
    assert result.error is not None and result.error.kind == "timeout"
    assert result.stdout == "partial\n"
    assert (await kernel.execute("print('still usable')")).stdout == "still usable\n"


async def test_timeout_during_a_tool_call(make_kernel: Callable[..., ToolKernel]) -> None:
    async def slow() -> None:
        await asyncio.sleep(30)

    async with make_kernel([slow], tool_timeout=None) as kernel:
        result = await kernel.execute("import tools\nawait tools.slow()", timeout=0.5)
        assert result.error is not None and result.error.kind == "timeout"
        assert [c.error for c in result.tool_calls] == ["cancelled"]


async def test_kernel_death_is_an_error_not_a_hang(kernel: ToolKernel) -> None:
    await kernel.execute("x = 1")
    result = await kernel.execute("import os\nos._exit(1)")
    assert result.error is not None
    assert result.error.kind == "kernel_died"
    # the next execution gets a fresh kernel
    result = await kernel.execute("print('x' in globals())")
    assert result.stdout == "False\n"


async def test_restart_gives_a_fresh_process_with_the_same_tools(kernel: ToolKernel) -> None:
    await kernel.execute("import os\npid = os.getpid()")
    await kernel.restart()
    result = await kernel.execute(
        "import os, tools\nprint('pid' in globals())\nprint(await tools.get_weather('Ulm', 'DE'))")
    assert result.stdout == "False\nWeather in Ulm, DE: Sunny, 22°C\n"


async def test_adopting_a_running_kernel_manager(kernel_python: str) -> None:
    from jupyter_client.manager import AsyncKernelManager

    from progtc_kernel.kernels.local import single_spec

    km = AsyncKernelManager(kernel_spec_manager=single_spec(kernel_python),
                            kernel_name="progtc")
    await km.start_kernel()  # no --ext: the extension is loaded on adoption
    try:
        async with ToolKernel([search_database], kernel_manager=km) as kernel:
            result = await kernel.execute("import tools\nprint(len(tools.search_database('x')))")
            assert result.stdout == "3\n"
        assert await km.is_alive()  # yours, so left running
    finally:
        await km.shutdown_kernel(now=True)
