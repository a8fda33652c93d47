"""Blocking use: SyncToolKernel and run(), also from inside a running event loop.

SyncToolKernel is ToolKernel without await: every public method and property of
ToolKernel is there, blocking, and its one loop thread never outlives it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from pathlib import Path

import pytest

from progtc_kernel import (
    ExecutionFinished,
    KernelError,
    LocalKernel,
    StreamOutput,
    SyncToolKernel,
    ToolCallFinished,
    ToolCallStarted,
    ToolKernel,
    run,
)

from .conftest import TOOLS


def loop_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "progtc-kernel-loop"]


def test_sync_kernel_in_a_script(kernel_python: str) -> None:
    with SyncToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python)) as kernel:
        kernel.execute("import tools\nhits = await tools.search_database('spa', limit=2)")
        result = kernel.execute("print(len(hits))")
        assert result.stdout == "2\n"
        kernel.reset()
        assert not kernel.execute("hits").ok
    assert loop_threads() == []


def test_every_public_method_and_property_of_tool_kernel_is_there_without_await() -> None:
    for name, member in inspect.getmembers(ToolKernel):
        if name.startswith("_"):
            continue
        ours = inspect.getattr_static(SyncToolKernel, name, None)
        assert ours is not None, f"SyncToolKernel has no {name}"
        assert type(ours) is type(member) or inspect.isfunction(ours), name
        assert not inspect.iscoroutinefunction(ours) and not inspect.isasyncgenfunction(ours)


def test_stream_install_modules_running_and_settings(newest_kernel_python: str) -> None:
    kernel = SyncToolKernel(TOOLS, kernel=LocalKernel(python=newest_kernel_python))
    assert not kernel.running
    with kernel:
        assert kernel.running
        kernel.install_modules(
            {
                "weather": (
                    "from tools import get_weather\n"
                    "def oslo():\n    return get_weather('Oslo', 'NO')\n"
                )
            }
        )

        events = list(kernel.stream("import weather\nprint(weather.oslo())"))

        assert {type(event) for event in events[:-1]} == {
            ToolCallStarted,
            ToolCallFinished,
            StreamOutput,
        }
        finished = events[-1]
        assert isinstance(finished, ExecutionFinished)
        assert finished.result.stdout == "Weather in Oslo, NO: Sunny, 22°C\n"
        with pytest.raises(ValueError, match="tools"):
            kernel.install_modules({"tools": "x = 1"})

        # Leaving a stream early interrupts its run; the kernel and its state stay.
        with contextlib.closing(
            kernel.stream("import time\nprint('started', flush=True)\ntime.sleep(120)")
        ) as running:
            assert next(running) == StreamOutput("stdout", "started\n")
        assert kernel.execute("print(weather.__name__)").stdout == "weather\n"

        # interrupt() stops the running code, as the toolbar's button does.
        events = kernel.stream("import time\nprint('started', flush=True)\ntime.sleep(120)")
        assert next(events) == StreamOutput("stdout", "started\n")
        kernel.interrupt()
        *_, last = events
        assert isinstance(last, ExecutionFinished) and last.result.error is not None
        assert last.result.error.kind == "cancelled"

        kernel.timeout = 0.5  # the kernel's own setting
        assert kernel.kernel.timeout.run == 0.5
        assert kernel.execute("import time\ntime.sleep(30)").error.kind == "timeout"
        assert kernel.kernel_manager is not None and kernel.bridge.kernel_info is not None
        kernel.restart()
        assert not kernel.execute("weather").ok  # a fresh process
    assert not kernel.running
    assert loop_threads() == []


def test_a_kernel_that_cannot_be_made_or_started_leaves_no_thread(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="kernel_id= names a kernel on a Jupyter Server"):
        SyncToolKernel(kernel_id="x")  # type: ignore[arg-type]
    assert loop_threads() == []

    with (
        pytest.raises(KernelError, match="no Python interpreter at"),
        SyncToolKernel(kernel=LocalKernel(python=str(tmp_path / "python"))),
    ):
        pass
    assert loop_threads() == []


async def test_run_works_inside_a_running_event_loop(newest_kernel_python: str) -> None:
    # As in a Jupyter notebook, where a loop is already running.
    assert asyncio.get_running_loop().is_running()
    result = run(
        "from tools import get_weather\nprint(await get_weather('Kyiv', 'UA'))",
        TOOLS,
        kernel=LocalKernel(python=newest_kernel_python),
    )
    assert result.stdout == "Weather in Kyiv, UA: Sunny, 22°C\n"
    assert [call.name for call in result.tool_calls] == ["get_weather"]
    assert loop_threads() == []
