"""A host process for tests/test_resumable.py: it serves two tools to a kernel it
attaches to (a connection file, or ``URL#TOKEN#KERNEL_ID`` on a Jupyter Server).

``first SCENARIO GRACE``: starts the scenario's run (resumable with GRACE seconds;
0: not resumable), prints ``waiting`` once the run waits where the test kills it,
then waits for ever. ``second``: attaches, prints the held runs and the result of
joining the first of them, as JSON lines. ``close``: as ``first``, then closes
cleanly and prints the run's result. The tools record each run in files of WORKDIR,
so the test can tell whether a call ran, and how often.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from progtc_kernel import Approval, ApprovalRequested, JupyterServer, RemoteKernel, ToolKernel
from progtc_kernel.host.events import ExecutionFinished, ToolCallStarted

ROLE, KERNEL, WORKDIR = sys.argv[1], sys.argv[2], Path(sys.argv[3])

CODE = {
    # A call the host runs (busy, on the only thread) and one it has queued (count).
    "queued": (
        "import asyncio, tools\n"
        "busy, count = await asyncio.gather(tools.busy(), tools.count(), return_exceptions=True)\n"
        "print(type(busy).__name__, busy.message if hasattr(busy, 'message') else busy)\n"
        "print('count', getattr(count, 'message', count))\n"
    ),
    # A call that waits for a person's approval.
    "approval": "import tools\nprint('count', await tools.count())\n",
    # A call that waits for approval, whose host is killed once it decided.
    "decided": (
        "import tools\n"
        "try:\n"
        "    print('count', await tools.count())\n"
        "except tools.HostDisconnectedError as e:\n"
        "    print('HostDisconnectedError', e.message)\n"
    ),
    # A call made while no host is attached.
    "later": (
        "import tools\n"
        "try:\n"
        "    await tools.busy()\n"
        "except tools.HostDisconnectedError as e:\n"
        "    print('HostDisconnectedError', e.message)\n"
        "print('count', await tools.count())\n"
    ),
}


def record(name: str) -> int:
    """Count one run of ``name`` in WORKDIR/name; returns how many there were."""
    path = WORKDIR / name
    runs = int(path.read_text()) + 1 if path.exists() else 1
    (WORKDIR / f"{name}.new").write_text(str(runs))
    os.replace(WORKDIR / f"{name}.new", path)  # whole, even if the process is killed
    return runs


# Set once busy runs, in the first host: the test kills it after that.
busy_runs: asyncio.Future[None] | None = None


def count() -> int:
    """Counts its runs; in the first host (which the test kills) it then never ends."""
    runs = record("count")
    if ROLE == "first":
        threading.Event().wait()
    return runs


def busy() -> str:
    """Runs until the process ends, in the first host (which the test kills)."""
    record("busy")
    if busy_runs is not None:
        busy_runs.get_loop().call_soon_threadsafe(busy_runs.set_result, None)
    if ROLE != "second":
        threading.Event().wait()
    return "busy ran again"


def kernel_given() -> Any:
    if "#" not in KERNEL:
        return KERNEL  # a connection file
    url, token, kernel_id = KERNEL.split("#")
    return RemoteKernel(JupyterServer(url, token=token), kernel_id)


async def first(scenario: str, grace: float) -> None:
    """Start the run and wait, killed by the test where the run waits."""
    if scenario in ("approval", "decided"):
        await first_asking(scenario, grace)
        return
    global busy_runs
    busy_runs = asyncio.get_running_loop().create_future()
    async with ToolKernel(
        [busy, count], kernel=kernel_given(), tool_threads=1, timeout=None
    ) as kernel:
        waits_on = "count" if scenario == "queued" else "busy"
        async for event in kernel.stream(CODE[scenario], resumable=grace or False):
            if isinstance(event, ToolCallStarted) and event.name == waits_on:
                await busy_runs
                await kernel.confirm_waiting()  # the kernel knows what waits here
                print("waiting", flush=True)


async def first_asking(scenario: str, grace: float) -> None:
    """Start a run whose call needs approval; print its id once the approval is asked.
    In ``decided``, approve it when a line comes on stdin, and say so."""
    async with ToolKernel(
        [busy, count], kernel=kernel_given(), requires_approval={"count"}, timeout=None
    ) as kernel:
        async for event in kernel.stream(CODE[scenario], resumable=grace):
            if isinstance(event, ApprovalRequested):
                print("run", event.request.run_id, flush=True)
                await kernel.confirm_waiting()  # the kernel knows the call waits here
                print("waiting", flush=True)
                if scenario == "decided":
                    await asyncio.to_thread(sys.stdin.readline)
                    await kernel.decide(event.request.call_id, Approval.allow())
                    print("decided", flush=True)


async def second_approving() -> None:
    """Attach, approve what the held run asks, and print what it gives."""
    async with ToolKernel(
        [busy, count], kernel=kernel_given(), requires_approval={"count"}
    ) as kernel:
        held = kernel.held_runs
        print(json.dumps({"held": held}), flush=True)
        if not held:  # the run ended before this host came
            return
        async for event in kernel.follow(held[0]):
            if isinstance(event, ApprovalRequested):
                print(json.dumps({"asked": event.request.tool}), flush=True)
                await kernel.decide(event.request.call_id, Approval.allow())
            elif isinstance(event, ExecutionFinished):
                result = event.result
                calls = [[call.name, call.ok] for call in result.tool_calls]
                print(json.dumps({"stdout": result.stdout, "calls": calls}), flush=True)


async def close(scenario: str, grace: float) -> None:
    """Start the run, and close while it waits: it stays held."""
    async with ToolKernel(
        [busy, count], kernel=kernel_given(), tool_threads=1, timeout=None
    ) as kernel:
        waits_on = "count" if scenario == "queued" else "busy"
        events = kernel.stream(CODE[scenario], resumable=grace)
        async for event in events:
            if isinstance(event, ToolCallStarted) and event.name == waits_on:
                break_out = asyncio.ensure_future(kernel.close())
                async for rest in events:
                    if isinstance(rest, ExecutionFinished):
                        error = rest.result.error
                        print(json.dumps({"error": error and error.ename}), flush=True)
                await break_out
                return


async def second() -> None:
    async with ToolKernel([busy, count], kernel=kernel_given(), tool_threads=1) as kernel:
        held = kernel.held_runs
        print(json.dumps({"held": held}), flush=True)
        result = await kernel.join(held[0])
        calls = [[call.name, call.ok] for call in result.tool_calls]
        print(json.dumps({"stdout": result.stdout, "ok": result.ok, "calls": calls}), flush=True)
        assert kernel.held_runs == []


if ROLE == "first":
    asyncio.run(first(sys.argv[4], float(sys.argv[5])))
elif ROLE == "close":
    asyncio.run(close(sys.argv[4], float(sys.argv[5])))
elif sys.argv[4:] == ["approval"]:
    asyncio.run(second_approving())
else:
    asyncio.run(second())
