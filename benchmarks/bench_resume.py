"""A host restart in the middle of a resumable run: the time from a new host's
attach to the first pending call it answers.

    python benchmarks/bench_resume.py [--python KERNEL_PYTHON] [--json]

Without ``--python`` it runs once per ipykernel line the tests use (6.31 and 7), on
the tests' kernel environments. Per trial (3, each on a fresh kernel): this process
starts a kernel; a first host process (``tests/resumable_host.py``) starts a
resumable run whose call waits for a free thread, and is killed with SIGKILL; then a
``ToolKernel`` here attaches by the connection file. Measured, medians of 3:

1. attach to the first answered pending call: from ``ToolKernel.start()`` to the
   end of the held call's tool (the kernel sends it once this host is registered)
2. beside it, the attach alone (``start()`` returning, the run's call sent to it)

The load average (``uptime``) is printed with the figures: the machine is shared.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bare_kernel_manager, command_line, ipykernel_lines, judged, print_rows

from progtc_kernel import ToolKernel

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "tests" / "resumable_host.py"
TRIALS = 3


async def one_restart(python: str) -> tuple[float, float]:
    """(attach to the first answered pending call, attach alone), in seconds."""
    km = bare_kernel_manager(python)
    await km.start_kernel()
    waiter = km.client()
    waiter.start_channels()
    try:
        await waiter.wait_for_ready(timeout=60)
    finally:
        waiter.stop_channels()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            await kill_first_host(km.connection_file, workdir)
            answered = asyncio.get_running_loop().create_future()

            def busy() -> None:
                raise AssertionError("a call the first host ran is never sent again")

            async def count() -> int:
                if not answered.done():
                    answered.set_result(time.perf_counter())
                return 1

            began = time.perf_counter()
            async with ToolKernel([busy, count], kernel=km.connection_file) as kernel:
                attached = time.perf_counter() - began
                first_answer = await asyncio.wait_for(answered, 60) - began
                (run,) = kernel.held_runs
                await asyncio.wait_for(kernel.join(run), 60)
            return first_answer, attached
    finally:
        await km.shutdown_kernel(now=True)


async def kill_first_host(connection_file: str, workdir: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HOST),
        "first",
        connection_file,
        workdir,
        "queued",
        "600",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 120)
        assert line == b"waiting\n", line
    finally:
        process.kill()
        await process.wait()


async def measure(python: str, log: Any) -> dict[str, Any]:
    answers: list[float] = []
    attaches: list[float] = []
    for trial in range(TRIALS):
        log(f"{python}: host restart {trial + 1}/{TRIALS}")
        first_answer, attached = await one_restart(python)
        answers.append(first_answer)
        attaches.append(attached)
    line = subprocess.run(
        [python, "-c", "import ipykernel; print(ipykernel.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"ipykernel": line, "first_answer_s": answers, "attach_s": attaches}


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    answer = statistics.median(raw["first_answer_s"])
    attach = statistics.median(raw["attach_s"])
    return judged(
        [
            {
                "name": f"ipykernel {raw['ipykernel']}: attach to first answered held call (s)",
                "ratio": answer,
                "goal": None,
                "detail": f"{answer * 1000:.0f} ms (median of {TRIALS}; each "
                + ", ".join(f"{s * 1000:.0f}" for s in raw["first_answer_s"])
                + f" ms); the attach alone: {attach * 1000:.0f} ms",
            }
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(__doc__, argv, python_default=None)
    raws = [asyncio.run(measure(python, log)) for python in ipykernel_lines(args.python)]
    rows = [row for raw in raws for row in summarize(raw)]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if args.json:
        print(json.dumps({"results": rows, "raw": raws, "uptime": uptime}, indent=2))
    else:
        print(f"uptime: {uptime}")
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
