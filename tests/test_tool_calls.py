"""Tool calls end to end: validation, serialization, timeouts, interrupts, bursts."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest

from progtc_kernel import ExecutionFinished, LocalKernel, StreamOutput, SyncToolKernel, ToolKernel
from progtc_kernel.host.results import RunError
from progtc_kernel.timeouts import Timeout

from .conftest import interrupt_during_call


class Hotel(pydantic.BaseModel):
    name: str
    stars: int


@dataclasses.dataclass
class Room:
    number: int
    booked_until: dt.date


def find_hotel(city: str, min_stars: int = 3) -> Hotel:
    return Hotel(name=f"{city} Palace", stars=min_stars)


def free_room(hotel: Hotel, day: dt.date) -> Room:
    return Room(number=hotel.stars * 100, booked_until=day + dt.timedelta(days=1))


def span(start: dt.datetime, *hours: int) -> tuple[str, int]:
    return start.isoformat(), sum(hours)


async def test_arguments_are_validated_before_the_tool_runs(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    ran = []

    def count(n: int) -> int:
        ran.append(n)
        return n

    async with make_kernel([count]) as kernel:
        result = await kernel.execute(
            "from tools import count, ToolError\n"
            "try:\n"
            "    await count('ten')\n"
            "except ToolError as e:\n"
            "    print(type(e).__name__, '|', e.message)\n"
            "print(await count('7'))\n"
        )
    assert result.ok, result.error
    first, second = result.stdout.splitlines()
    assert first.startswith("ToolArgumentError | n: Input should be a valid integer")
    assert "(got 'ten')" in first
    assert second == "7"
    assert ran == [7]  # the bad call never reached the tool


async def test_models_dataclasses_dates_and_tuples_cross_both_ways(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async with make_kernel([find_hotel, free_room, span]) as kernel:
        result = await kernel.execute(
            "import datetime as dt, tools\n"
            "hotel = await tools.find_hotel('Oslo', min_stars=4)\n"
            "print(hotel)\n"
            "print(await tools.free_room(hotel, dt.date(2026, 1, 31)))\n"
            "print(await tools.span(dt.datetime(2026, 1, 1, 8, 30), 1, 2, 3))\n"
        )
    assert result.ok, result.error
    assert result.stdout.splitlines() == [
        "{'name': 'Oslo Palace', 'stars': 4}",
        "{'number': 400, 'booked_until': '2026-02-01'}",
        "['2026-01-01T08:30:00', 6]",
    ]


async def test_unsendable_argument_fails_on_the_callers_line(kernel: ToolKernel) -> None:
    result = await kernel.execute("import tools\nawait tools.search_database(object())")
    assert result.error is not None
    assert result.error.ename == "ToolArgumentError"
    assert "cannot be sent to the host" in result.error.evalue


async def test_a_result_that_is_not_json_becomes_a_tool_error(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    def handle() -> object:
        return object()

    async with make_kernel([handle]) as kernel:
        result = await kernel.execute("import tools\nawait tools.handle()")
    assert result.error is not None and result.error.ename == "ToolError"
    assert "cannot be turned into JSON" in result.error.evalue
    [call] = result.tool_calls
    assert call.error is not None and call.error.startswith("ResultError")


async def test_a_result_json_cannot_carry_fails_at_once(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    def broken() -> str:
        return "lone \udc80 surrogate"

    # No tool_timeout: a result that never left the host would hang the call.
    async with make_kernel([broken], timeout=Timeout(tool_call=None)) as kernel:
        result = await kernel.execute("import tools\ntools.broken()", timeout=120)
    assert result.error is not None and result.error.ename == "ToolError"
    assert "lone surrogate" in result.error.evalue
    [call] = result.tool_calls
    assert not call.ok


@pytest.mark.ipykernel_lines
async def test_per_call_timeout_raises_timeout_error_and_cancels_the_tool(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async with make_kernel([slow], timeout=Timeout(tool_call=0.3)) as kernel:
        result = await kernel.execute(
            "import tools\n"
            "try:\n"
            "    await tools.slow()\n"
            "except TimeoutError as e:\n"
            "    print('timed out:', e)\n"
            "def run():\n"
            "    return tools.slow()\n"
            "try:\n"
            "    run()\n"
            "except TimeoutError:\n"
            "    print('blocking call timed out too')\n"
        )
        assert result.ok, result.error
        assert result.stdout.splitlines() == [
            "timed out: tool 'slow' failed: TimeoutError: no result within 0.3 s"
            " (the tool-call timeout)",
            "blocking call timed out too",
        ]
        await cancelled.wait()


@pytest.mark.ipykernel_lines
async def test_interrupt_cancels_pending_calls(make_kernel: Callable[..., ToolKernel]) -> None:
    running: dict[str, asyncio.Event] = {tag: asyncio.Event() for tag in "abc"}
    cancelled: dict[str, asyncio.Event] = {tag: asyncio.Event() for tag in "abc"}

    async def slow(tag: str) -> None:
        running[tag].set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled[tag].set()
            raise

    async with make_kernel([slow]) as kernel:
        kind = await interrupt_during_call(
            kernel,
            "import asyncio, tools\nawait asyncio.gather(tools.slow('a'), tools.slow('b'))",
            started=lambda: asyncio.gather(running["a"].wait(), running["b"].wait()),
        )
        assert kind == "cancelled"
        await asyncio.gather(cancelled["a"].wait(), cancelled["b"].wait())

        kind = await interrupt_during_call(
            kernel,
            "import tools\ndef run():\n    tools.slow('c')\nrun()",
            started=running["c"].wait,
        )
        assert kind == "cancelled"
        await cancelled["c"].wait()

        # the kernel is fine afterwards
        assert (await kernel.execute("print('alive')")).stdout == "alive\n"


@pytest.mark.ipykernel_lines
async def test_a_timeout_stops_awaiting_code_and_keeps_the_kernels_state(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async def stall() -> None:
        await asyncio.Event().wait()

    async with make_kernel([stall], timeout=Timeout(tool_call=None)) as kernel:
        assert (await kernel.execute("x = 1")).ok
        for code in (
            "import asyncio\nawait asyncio.sleep(1000)",
            "import tools\nawait tools.stall()",
        ):
            result = await kernel.execute(code, timeout=1)
            assert result.error is not None, code
            # Interrupted, not restarted: "did not stop after an interrupt" would mean
            # the kernel was replaced, and x lost with it.
            assert (result.error.kind, result.error.evalue) == (
                "timeout",
                "the execution exceeded its timeout and was interrupted",
            ), code
            assert (await kernel.execute("print(x)")).stdout == "1\n", code


async def interrupt_awaiting_code(kernel: ToolKernel) -> RunError | None:
    """Run a cell that awaits with no tool call pending (nothing but the interrupt can
    wake the kernel), interrupt it once it printed, and return the run's error."""
    code = "import asyncio\nprint('sleeping')\nawait asyncio.sleep(1000)"
    async for event in kernel.stream(code):
        if isinstance(event, StreamOutput) and "sleeping" in event.text:
            await kernel.interrupt()
        elif isinstance(event, ExecutionFinished):
            return event.result.error
    raise AssertionError("the run did not finish")


@pytest.mark.ipykernel_lines
async def test_an_interrupt_stops_awaiting_code_and_keeps_the_kernels_state(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async with make_kernel([], timeout=60) as kernel:
        assert (await kernel.execute("x = 1")).ok
        error = await interrupt_awaiting_code(kernel)
        assert error is not None and error.kind == "cancelled", error
        assert (await kernel.execute("print(x)")).stdout == "1\n"


@pytest.mark.ipykernel_lines
async def test_a_hung_sync_tool_never_blocks_the_others(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    release = threading.Event()

    def hang() -> None:
        release.wait()

    def quick() -> int:
        return 1

    try:
        async with make_kernel(
            [hang, quick], tool_threads=1, timeout=Timeout(tool_call=1)
        ) as kernel:
            result = await kernel.execute(
                "import asyncio, tools\n"
                "out = await asyncio.gather(tools.hang(), tools.quick(), return_exceptions=True)\n"
                "for o in out:\n"
                "    print(type(o).__name__, '|', getattr(o, 'message', o))\n"
            )
            assert result.ok, result.error
            # The hung call times out and its thread is abandoned; the call waiting for
            # that thread was charged nothing for waiting, and runs.
            assert result.stdout.splitlines() == [
                "ToolTimeoutError | no result within 1 s (the tool-call timeout)",
                "int | 1",
            ]
            result = await kernel.execute("import tools\nprint(tools.quick())")
            assert result.stdout == "1\n", result.error
    finally:
        release.set()


async def test_waiting_for_a_thread_is_not_charged_to_the_tool_timeout(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    def work(n: int) -> int:
        time.sleep(0.8)  # the work itself: well inside tool_timeout
        return n

    # One thread: the fourth call waits 2.4 s for it, longer than tool_timeout.
    async with make_kernel([work], tool_threads=1, timeout=Timeout(tool_call=2)) as kernel:
        result = await kernel.execute(
            "import asyncio, tools\n"
            "print(await asyncio.gather(*[tools.work(i) for i in range(4)]))\n"
        )
    assert result.stdout == "[0, 1, 2, 3]\n", result.error


@pytest.mark.ipykernel_lines
async def test_a_tool_that_exits_or_interrupts_only_fails_its_call(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    def parse(flag: str) -> None:
        argparse.ArgumentParser(prog="parse").parse_args([flag])

    async def stop() -> None:
        raise KeyboardInterrupt

    async with make_kernel([parse, stop]) as kernel:
        result = await kernel.execute(
            "import tools\n"
            "for call in (lambda: tools.parse('--bad'), tools.stop):\n"
            "    try:\n"
            "        call()\n"
            "    except tools.ToolError as e:\n"
            "        print(e.error_type)\n"
        )
        assert result.stdout == "SystemExit\nKeyboardInterrupt\n", result.error
        assert (await kernel.execute("print('host alive')")).stdout == "host alive\n"


async def test_a_tool_cannot_run_code_on_the_kernel_calling_it(kernel_python: str) -> None:
    async def nested() -> str:
        result = await kernel.execute("1")
        return str(result)

    kernel = ToolKernel([nested], kernel=LocalKernel(python=kernel_python))
    async with kernel:
        result = await kernel.execute("import tools\nawait tools.nested()")
    assert result.error is not None and result.error.ename == "ToolError"
    assert (
        "ReentrantExecutionError: a tool tried to run code on the kernel that is calling "
        "it" in result.error.evalue
    )


def test_a_sync_tool_cannot_run_code_on_the_sync_kernel_calling_it(kernel_python: str) -> None:
    def nested() -> str:
        return str(kernel.execute("1"))

    kernel = SyncToolKernel([nested], kernel=LocalKernel(python=kernel_python))
    with kernel:
        result = kernel.execute("import tools\ntools.nested()")
        assert result.error is not None
        assert "ReentrantExecutionError" in result.error.evalue
        assert kernel.execute("print('fine')").stdout == "fine\n"


async def test_a_hung_sync_tool_does_not_keep_the_host_from_exiting(
    kernel_python: str,
    tmp_path: Path,
) -> None:
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(f"""\
        import asyncio, threading
        from progtc_kernel import LocalKernel, Timeout, ToolKernel

        def hang() -> None:
            threading.Event().wait()  # never returns

        async def main() -> None:
            kernel = LocalKernel(python={kernel_python!r})
            limits = Timeout(tool_call=0.5)
            async with ToolKernel([hang], kernel=kernel, timeout=limits) as k:
                result = await k.execute("import tools\\ntools.hang()")
                print(result.error.ename)

        asyncio.run(main())
        print("exited")
        """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout == "ToolTimeoutError\nexited\n", done.stderr
    assert done.returncode == 0


@pytest.mark.ipykernel_lines
async def test_thousands_of_gathered_calls_respect_the_in_flight_cap(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    active = peak = 0

    async def work(n: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001)
        active -= 1
        return n * 2

    async with make_kernel([work], max_in_flight=64) as kernel:
        result = await kernel.execute(
            "import asyncio, tools\n"
            "out = await asyncio.gather(*[tools.work(i) for i in range(3000)])\n"
            "print(sum(out), len(out))\n"
        )
    assert result.ok, result.error
    assert result.stdout.strip() == f"{sum(range(3000)) * 2} 3000"
    assert len(result.tool_calls) == 3000
    assert 1 < peak <= 64
