"""Tool calls end to end: validation, serialization, timeouts, interrupts, bursts."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Callable

import pydantic

from progtc_kernel import ToolKernel

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
            "print(await count('7'))\n")
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
            "print(await tools.span(dt.datetime(2026, 1, 1, 8, 30), 1, 2, 3))\n")
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


async def test_per_call_timeout_raises_timeout_error_and_cancels_the_tool(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    async with make_kernel([slow], tool_timeout=0.3) as kernel:
        started = time.monotonic()
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
            "    print('blocking call timed out too')\n")
        assert result.ok, result.error
        assert time.monotonic() - started < 3
        assert result.stdout.splitlines() == [
            "timed out: tool 'slow' failed: TimeoutError: no result within 0.3 s (tool_timeout)",
            "blocking call timed out too",
        ]
        await asyncio.wait_for(cancelled.wait(), 2)


async def test_interrupt_cancels_pending_calls_promptly(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    cancelled: list[str] = []

    async def slow(tag: str) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(tag)
            raise

    async with make_kernel([slow]) as kernel:
        delay, kind = await interrupt_during_call(
            kernel, "import asyncio, tools\n"
                    "await asyncio.gather(tools.slow('a'), tools.slow('b'))")
        assert delay < 0.5
        assert kind == "cancelled"
        await asyncio.sleep(0.2)
        assert sorted(cancelled) == ["a", "b"]

        delay, kind = await interrupt_during_call(
            kernel, "import tools\ndef run():\n    tools.slow('c')\nrun()")
        assert delay < 0.5
        assert kind == "cancelled"
        await asyncio.sleep(0.2)
        assert "c" in cancelled

        # the kernel is fine afterwards
        assert (await kernel.execute("print('alive')")).stdout == "alive\n"


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
            "print(sum(out), len(out))\n")
    assert result.ok, result.error
    assert result.stdout.strip() == f"{sum(range(3000)) * 2} 3000"
    assert len(result.tool_calls) == 3000
    assert 1 < peak <= 64
