"""ToolKernel: running code, its results, its state and its failures."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import (
    DisplayOutput,
    ExecutionError,
    ExecutionFinished,
    KernelDiedError,
    KernelLike,
    KernelStartError,
    LocalKernel,
    StreamOutput,
    ToolCallFinished,
    ToolCallStarted,
    ToolKernel,
)
from progtc_kernel.kernels.local import single_spec
from progtc_kernel.timeouts import Timeout

from .conftest import build_env, plain_kernel, search_database


async def test_result_holds_stdout_stderr_and_rich_outputs(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "import sys\n"
        "from IPython.display import display, HTML\n"
        "print('out')\n"
        "print('err', file=sys.stderr)\n"
        "display(HTML('<b>bold</b>'))\n"
        "6 * 7\n"
    )
    assert result.ok and result.error is None
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    html, value = result.outputs
    assert (html.kind, html.data["text/html"]) == ("display_data", "<b>bold</b>")
    assert (value.kind, value.text) == ("execute_result", "42")
    assert result.duration > 0
    assert result.execution_count is not None


async def test_images_arrive_as_mime_bundles(kernel: ToolKernel) -> None:
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
        "60e6kgAAAABJRU5ErkJggg=="
    )
    result = await kernel.execute(
        "import base64\nfrom IPython.display import Image, display\n"
        f"display(Image(data=base64.b64decode('{png}'), format='png'))\n"
    )
    [image] = result.outputs
    assert image.data["image/png"].strip() == png


async def test_display_updates_replace_the_shown_output(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "from IPython.display import display\n"
        "handle = display('loading', display_id=True)\n"
        "handle.update('done')\n"
    )
    [output] = result.outputs
    assert output.text == "'done'"


async def test_state_persists_between_executions(kernel: ToolKernel) -> None:
    await kernel.execute("import tools\ncounter = 41\nw = await tools.get_weather('Bern', 'CH')")
    result = await kernel.execute("counter += 1\nprint(counter, w)")
    assert result.stdout == "42 Weather in Bern, CH: Sunny, 22°C\n"


async def test_reset_clears_state_but_keeps_tools(kernel: ToolKernel) -> None:
    await kernel.execute("secret = 1")
    await kernel.reset()
    result = await kernel.execute(
        "print('secret' in globals())\n"
        "from tools import get_weather\n"
        "print(await get_weather('Riga', 'LV'))"
    )
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

    result = await kernel.execute(
        "import tools\nprint(dir(tools))\nprint(await tools.shout('hi'))", tools=[shout]
    )
    errors = [
        "HostDisconnectedError",
        "ToolArgumentError",
        "ToolDeniedError",
        "ToolError",
        "ToolTimeoutError",
    ]
    assert result.stdout == f"{[*errors, 'catalog', 'shout']}\nHI\n"
    result = await kernel.execute("import tools\nprint(dir(tools))")
    assert result.stdout == f"{[*errors, 'catalog', 'fail', 'get_weather', 'search_database']}\n"


async def test_tools_as_a_mapping_name_them(make_kernel: Callable[..., ToolKernel]) -> None:
    async with make_kernel({"double": lambda x: 2 * x}) as kernel:
        result = await kernel.execute("from tools import double\nprint(await double(21))")
    assert result.stdout == "42\n"


async def test_stream_yields_live_events_in_order(kernel: ToolKernel) -> None:
    events = [
        event
        async for event in kernel.stream(
            "import sys, tools\n"
            "print('one', flush=True)\n"
            "await tools.get_weather('Nice', 'FR')\n"
            "print('two', file=sys.stderr)\n"
            "from IPython.display import display\n"
            "display({'a': 1}, raw=False)\n"
        )
    ]
    kinds = [type(e) for e in events]
    assert kinds == [
        StreamOutput,
        ToolCallStarted,
        ToolCallFinished,
        StreamOutput,
        DisplayOutput,
        ExecutionFinished,
    ]
    started = events[1]
    assert isinstance(started, ToolCallStarted)
    assert (started.name, started.arguments) == ("get_weather", {"city": "Nice", "country": "FR"})
    finished = events[-1]
    assert isinstance(finished, ExecutionFinished) and finished.result.ok


@pytest.mark.ipykernel_lines
async def test_timeout_interrupts_and_keeps_partial_output(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "import time\nprint('partial', flush=True)\ntime.sleep(30)", timeout=1
    )
    assert result.error is not None and result.error.kind == "timeout"
    assert result.stdout == "partial\n"
    assert (await kernel.execute("print('still usable')")).stdout == "still usable\n"


@pytest.mark.ipykernel_lines
async def test_timeout_during_a_tool_call(make_kernel: Callable[..., ToolKernel]) -> None:
    async def slow() -> None:
        await asyncio.Event().wait()

    async with make_kernel([slow], timeout=Timeout(tool_call=None)) as kernel:
        result = await kernel.execute("import tools\nawait tools.slow()", timeout=0.5)
        assert result.error is not None and result.error.kind == "timeout"
        assert [c.error for c in result.tool_calls] == ["cancelled"]


@pytest.mark.ipykernel_lines
async def test_kernel_death_is_an_error_not_a_hang(kernel: ToolKernel) -> None:
    await kernel.execute("x = 1")
    result = await kernel.execute("import os\nos._exit(1)")
    assert result.error is not None
    assert result.error.kind == "kernel_died"
    # the next execution gets a fresh kernel
    result = await kernel.execute("print('x' in globals())")
    assert result.stdout == "False\n"


@pytest.mark.ipykernel_lines
async def test_restart_gives_a_fresh_process_with_the_same_tools(kernel: ToolKernel) -> None:
    await kernel.execute("import os\npid = os.getpid()")
    await kernel.restart()
    result = await kernel.execute(
        "import os, tools\nprint('pid' in globals())\nprint(await tools.get_weather('Ulm', 'DE'))"
    )
    assert result.stdout == "False\nWeather in Ulm, DE: Sunny, 22°C\n"


async def test_an_idle_kernel_manager_is_started_and_owned(kernel_python: str) -> None:
    km = AsyncKernelManager(kernel_spec_manager=single_spec(kernel_python), kernel_name="progtc")
    async with ToolKernel([search_database], kernel=km) as kernel:
        result = await kernel.execute("import tools\nprint(len(tools.search_database('x')))")
        assert result.stdout == "3\n"
    assert not km.has_kernel  # started here, so shut down here


@pytest.mark.parametrize(
    "given", ["manager", "connection file", "loaded manager", "client", "connection info"]
)
async def test_a_running_kernel_is_attached_to_never_replaced(
    given: str,
    own_kernel: AsyncKernelManager,
) -> None:
    connection_file = Path(own_kernel.connection_file)
    written = connection_file.read_bytes()
    pid = own_kernel.provisioner.pid  # type: ignore[union-attr]
    loaded = AsyncKernelManager()
    loaded.load_connection_file(str(connection_file))
    client = own_kernel.client()
    kernels: dict[str, KernelLike] = {
        "manager": own_kernel,
        "connection file": str(connection_file),
        "loaded manager": loaded,
        "client": client,
        "connection info": dict(own_kernel.get_connection_info()),
    }
    kernel_given = kernels[given]

    async with ToolKernel([search_database], kernel=kernel_given) as kernel:
        assert not kernel.lifecycle.owned
        result = await kernel.execute(
            "import os, tools\nprint(os.getpid(), len(tools.search_database('x')))"
        )
        assert result.stdout == f"{pid} 3\n", result.error  # the user's own kernel

    assert await own_kernel.is_alive()  # left running
    assert connection_file.read_bytes() == written  # neither rewritten nor deleted
    probe = own_kernel.client()
    probe.start_channels()
    try:
        reply = await probe.execute_interactive("x = 1", timeout=30)
        assert reply["content"]["status"] == "ok"
    finally:
        probe.stop_channels()


async def test_options_for_starting_a_kernel_cannot_apply_to_one_given(
    own_kernel: AsyncKernelManager,
) -> None:
    with pytest.raises(TypeError, match="cannot apply to the kernel given"):
        ToolKernel(kernel=own_kernel, python="python3")  # type: ignore[arg-type]


@pytest.mark.ipykernel_lines
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_attaching_two_hundred_times_never_stalls(
    transport: str,
    kernel_python: str,
    tmp_path: Path,
) -> None:
    km = await plain_kernel(kernel_python, transport, tmp_path)
    try:
        for attempt in range(200):
            async with ToolKernel([search_database], kernel=km) as kernel:
                # a stalled attach never sees its execute_reply: the guard catches it
                result = await asyncio.wait_for(
                    kernel.execute("import tools\nprint(len(tools.search_database('x', 2)))"), 60
                )
                assert result.stdout == "2\n", (attempt, result.error)
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.ipykernel_lines
@pytest.mark.parametrize("given", ["manager", "connection file"])
async def test_a_kernel_given_is_interrupted_and_its_death_reported_not_replaced(
    given: str,
    own_kernel: AsyncKernelManager,
) -> None:
    kernel_given = own_kernel if given == "manager" else own_kernel.connection_file
    async with ToolKernel([search_database], kernel=kernel_given) as kernel:
        # without a manager, interrupts go as interrupt_request messages
        result = await kernel.execute("import time\ntime.sleep(60)", timeout=1)
        assert result.error is not None and result.error.kind == "timeout"
        assert (await kernel.execute("print('usable')")).stdout == "usable\n"
        # without a manager, death shows as a heartbeat that stopped
        result = await kernel.execute("import os\nos._exit(1)")
        assert result.error is not None and result.error.kind == "kernel_died"
        with pytest.raises(KernelDiedError, match="the kernel given to ToolKernel died"):
            await kernel.execute("1")
    assert not await own_kernel.is_alive()


@pytest.mark.ipykernel_lines
async def test_kernel_death_cancels_the_tools_still_running(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    cancelled = asyncio.Event()

    async def kill_the_kernel() -> None:
        os.kill(kernel.kernel_manager.provisioner.pid, signal.SIGKILL)  # type: ignore[union-attr]
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    kernel = make_kernel([kill_the_kernel], timeout=Timeout(tool_call=None))
    async with kernel:
        result = await kernel.execute("import tools\nawait tools.kill_the_kernel()", timeout=None)
        assert result.error is not None and result.error.kind == "kernel_died"
        await cancelled.wait()  # seen with the death, not at the next execute
        assert (await kernel.execute("print('fresh')")).stdout == "fresh\n"


# -- start failures ---------------------------------------------------------------


async def test_an_interpreter_without_ipykernel_fails_fast_with_its_own_words() -> None:
    bare = build_env("bare", [])
    with pytest.raises(KernelStartError) as failure:
        # A generous startup timeout: the death itself must end the wait.
        async with ToolKernel(kernel=LocalKernel(python=bare), timeout=Timeout(start=600)):
            pass
    message = str(failure.value)
    assert "the kernel process exited while starting (exit code 1)" in message
    assert "No module named ipykernel_launcher" in message
    assert f"{bare} -m pip install ipykernel (the kernel needs nothing else" in message


def test_the_cli_gives_the_same_advice(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    bare = build_env("bare", [])
    script = tmp_path / "script.py"
    script.write_text("print('hi')\n")
    from progtc_kernel.cli import main

    assert main(["run", str(script), "--python", bare]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "could not start a kernel with --python" in err
    assert f"{bare} -m pip install ipykernel" in err
