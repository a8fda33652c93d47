"""Events, not polling: interrupts, an idle kernel's wake-ups, and a kernel's death.

    python benchmarks/bench_events.py [--python KERNEL_PYTHON] [--json]

Without ``--python`` it runs once per ipykernel line the tests use (6.31 and 7), on
the tests' kernel environments (``tests/conftest.py``; built under ``.kernel-envs/``
on first use). Per line:

1. interrupt with 100 awaited calls pending, to the run's result     (goal: median <= 0.03 s)
2. interrupt with one blocking call pending, to the run's result     (goal: median <= 0.03 s)
   (beside both, the floor: interrupting ``time.sleep`` in the same kernel, no call pending)
3. wake-ups of the kernel's main thread in a 2 s window while its cell awaits a
   pending call, and while it blocks on one (voluntary context switches, from
   ``/proc``; the whole process beside it, against an idle kernel)  (goal: 0)
4. a kernel killed with SIGKILL mid-run, to the run's ``kernel_died`` result   (goal <= 0.1 s)
5. a kernel attached by its connection file killed with SIGKILL, to the end of
   ``AttachedKernel.wait()``                                          (goal <= 0.1 s)

Linux only (``/proc``). Interrupts are medians of 10 (after one warm-up); deaths of 3,
each on a fresh kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    Stalls,
    interrupt_latency,
    judged,
    kernel_pid,
    main_per_line,
    pending,
)

from progtc_kernel import LocalKernel, ToolKernel
from progtc_kernel.kernels.local import AttachedKernel

ROOT = Path(__file__).resolve().parent.parent
PENDING = 100
INTERRUPTS = 10
DEATHS = 3
WINDOW = 2.0  # seconds over which wake-ups are counted
TIMEOUT = 60.0

SLEEP_CELL = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)"


async def sleep_interrupt_latency(kernel: ToolKernel) -> float:
    """The floor: seconds from interrupting ``time.sleep`` (no call pending) to the
    run's result, on the same kernel and path."""
    from progtc_kernel.host.events import ExecutionFinished, StreamOutput

    start = 0.0
    async for event in kernel.stream(SLEEP_CELL, timeout=TIMEOUT):
        if isinstance(event, StreamOutput) and "sleeping" in event.text:
            start = time.perf_counter()
            await kernel.interrupt()
        elif isinstance(event, ExecutionFinished):
            return time.perf_counter() - start
    raise RuntimeError("the run did not finish")


def switches(pid: int) -> dict[int, int]:
    """Voluntary context switches of each of a process's threads (by thread id)."""
    counts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    counts[int(task.name)] = int(line.split()[1])
    return counts


async def wakeups(pid: int) -> tuple[int, int]:
    """(main thread, whole process) wake-ups over WINDOW seconds."""
    before = switches(pid)
    await asyncio.sleep(WINDOW)  # the window measured: nothing to wait for here
    after = switches(pid)
    total = sum(after[tid] - before.get(tid, 0) for tid in after)
    return after[pid] - before[pid], total


async def idle_wakeups(kernel: ToolKernel, stalls: Stalls) -> dict[str, int]:
    pid = kernel_pid(kernel.kernel_manager)
    out: dict[str, int] = {}
    _, out["idle_process"] = await wakeups(pid)
    for name, n in (("awaiting", 1), ("blocking", 0)):
        run = await pending(kernel, stalls, n)
        await asyncio.sleep(0.2)  # let the call's own messages settle first
        out[f"{name}_main"], out[f"{name}_process"] = await wakeups(pid)
        await kernel.interrupt()
        await run
    return out


async def death_in_run(python: str) -> float:
    """Seconds from SIGKILL of a kernel whose cell runs to the run's result."""
    stalls = Stalls()
    async with ToolKernel(
        [stalls.stall], kernel=LocalKernel(python=python), timeout=TIMEOUT
    ) as kernel:
        run = await pending(kernel, stalls, 1)
        os.kill(kernel_pid(kernel.kernel_manager), signal.SIGKILL)
        start = time.perf_counter()
        result = await run
        elapsed = time.perf_counter() - start
    if result.error is None or result.error.kind != "kernel_died":
        raise RuntimeError(f"the run did not end with the kernel's death: {result.error}")
    return elapsed


async def death_attached(python: str) -> float:
    """Seconds from SIGKILL of a kernel attached by its connection info to the end of
    the lifecycle's ``wait()``."""
    from bench import bare_kernel_manager

    km = bare_kernel_manager(python)
    await km.start_kernel()
    lifecycle = AttachedKernel(dict(km.get_connection_info()))
    try:
        await lifecycle.start()
        await asyncio.wait_for(lifecycle.until_connected(), TIMEOUT)
        gone = asyncio.ensure_future(lifecycle.wait())
        await asyncio.sleep(0)  # the wait has begun
        os.kill(kernel_pid(km), signal.SIGKILL)
        start = time.perf_counter()
        await asyncio.wait_for(gone, TIMEOUT)
        return time.perf_counter() - start
    finally:
        await lifecycle.shutdown()
        await km.shutdown_kernel(now=True)


async def measure(python: str, log: Any) -> dict[str, Any]:
    stalls = Stalls()
    out: dict[str, Any] = {}
    async with ToolKernel(
        [stalls.stall], kernel=LocalKernel(python=python), timeout=TIMEOUT
    ) as kernel:
        info: dict[str, Any] = dict(kernel.bridge.kernel_info or {})
        out["ipykernel"] = info.get("ipykernel")
        for name, n in (("awaited", PENDING), ("blocking", 0)):
            log(f"{info.get('ipykernel')}: interrupt, {name}")
            await interrupt_latency(kernel, stalls, n)  # warm-up
            samples = [await interrupt_latency(kernel, stalls, n) for _ in range(INTERRUPTS)]
            out[f"interrupt_{name}_s"] = statistics.median(samples)
        await sleep_interrupt_latency(kernel)  # warm-up
        out["interrupt_floor_s"] = statistics.median(
            [await sleep_interrupt_latency(kernel) for _ in range(INTERRUPTS)]
        )
        log(f"{info.get('ipykernel')}: wake-ups")
        out["wakeups"] = await idle_wakeups(kernel, stalls)
    log(f"{out['ipykernel']}: deaths")
    out["death_run_s"] = statistics.median([await death_in_run(python) for _ in range(DEATHS)])
    out["death_attached_s"] = statistics.median(
        [await death_attached(python) for _ in range(DEATHS)]
    )
    return out


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    ms, line, w = 1000.0, f"ipykernel {raw['ipykernel']}", raw["wakeups"]
    return judged(
        [
            {
                "name": f"{line}: interrupt, {PENDING} awaited calls pending (s)",
                "ratio": raw["interrupt_awaited_s"],
                "goal": ("<=", 0.03),
                "detail": f"{raw['interrupt_awaited_s'] * ms:.0f} ms (median of {INTERRUPTS}); "
                f"time.sleep interrupted: {raw['interrupt_floor_s'] * ms:.0f} ms",
            },
            {
                "name": f"{line}: interrupt, a blocking call pending (s)",
                "ratio": raw["interrupt_blocking_s"],
                "goal": ("<=", 0.03),
                "detail": f"{raw['interrupt_blocking_s'] * ms:.0f} ms (median of {INTERRUPTS}); "
                f"time.sleep interrupted: {raw['interrupt_floor_s'] * ms:.0f} ms",
            },
            {
                "name": f"{line}: main-thread wake-ups, awaiting a call",
                "ratio": w["awaiting_main"],
                "goal": ("<=", 0),
                "detail": f"in {WINDOW:g} s; whole process {w['awaiting_process']}, "
                f"an idle kernel's {w['idle_process']}",
            },
            {
                "name": f"{line}: main-thread wake-ups, blocked on a call",
                "ratio": w["blocking_main"],
                "goal": ("<=", 0),
                "detail": f"in {WINDOW:g} s; whole process {w['blocking_process']}, "
                f"an idle kernel's {w['idle_process']}",
            },
            {
                "name": f"{line}: SIGKILL mid-run to the run's result (s)",
                "ratio": raw["death_run_s"],
                "goal": ("<=", 0.1),
                "detail": f"{raw['death_run_s'] * ms:.1f} ms (median of {DEATHS})",
            },
            {
                "name": f"{line}: SIGKILL to an attached kernel's wait() (s)",
                "ratio": raw["death_attached_s"],
                "goal": ("<=", 0.1),
                "detail": f"{raw['death_attached_s'] * ms:.1f} ms (median of {DEATHS})",
            },
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return main_per_line(__doc__, argv, measure, summarize)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
