"""Kernels forked from a template (the fork server) against spawned ones, same run.

    python benchmarks/bench_fork.py [--python KERNEL_PYTHON] [--json] [--kernels 16]

Measures, as medians of 3 rounds that alternate the two kinds:

1. kernel start to its first execute reply, fork / spawn: a jupyter_client manager
   starts the kernel, a client sends ``execute_request`` at once and waits for the
   reply (the template already running)                     (goal <= 0.25, <= 100 ms)
2. the kernel's CPU to that first reply, fork / spawn                 (for information)
3. sum of PSS of N warm kernels (extension loaded, a first cell run), the template's
   included, fork / spawn                                              (goal <= 0.6)
4. ``ToolKernel`` start to the result of its first tool call, fork / spawn
                                                                       (for information)
and, once, how long the template itself takes to start. The machine's load is quoted.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import command_line, judged, print_rows
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import LocalKernel, ToolKernel
from progtc_kernel.kernels.fork_server import fork_server_metadata, stop_templates, template_for
from progtc_kernel.kernels.local import single_spec

ROUNDS = 3
STARTS_PER_ROUND = 5
TIMEOUT = 120.0


async def get_weather(city: str) -> str:
    """The demo's tool."""
    return f"Sunny in {city}"


def manager(python: str, fork: bool) -> AsyncKernelManager:
    provisioner = fork_server_metadata() if fork else None
    km = AsyncKernelManager(
        kernel_spec_manager=single_spec(python, provisioner), kernel_name="progtc"
    )
    km.transport = "ipc"  # as LocalKernel's
    km.ip = f"/tmp/progtc-bench-fork-{os.getpid()}-{id(km)}"
    return km


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss for pid {pid}")


async def first_reply(python: str, fork: bool) -> tuple[float, float]:
    """Seconds from the start to the first execute reply, and the kernel's CPU by then."""
    km = manager(python, fork)
    began = time.perf_counter()
    await km.start_kernel()
    client = km.client()
    client.start_channels()
    try:
        msg_id = client.execute("pass")
        while True:
            reply = await client.get_shell_msg(timeout=TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        took = time.perf_counter() - began
        assert km.provisioner is not None
        assert getattr(km.provisioner, "forked", False) == fork
        return took, cpu_seconds(int(km.provisioner.pid))  # type: ignore[attr-defined]
    finally:
        client.stop_channels()
        await km.shutdown_kernel(now=True)


async def warm_kernels_pss(python: str, fork: bool, n: int) -> float:
    """Sum of PSS (MiB) of ``n`` kernels with the extension loaded (and the template)."""
    kernels = [
        ToolKernel([get_weather], kernel=LocalKernel(python=python, fork_server=fork))
        for _ in range(n)
    ]
    try:
        for kernel in kernels:
            await kernel.start()
            await kernel.execute("x = 1", timeout=TIMEOUT)
        pids = [int(kernel.kernel_manager.provisioner.pid) for kernel in kernels]  # type: ignore[union-attr]
        if fork:
            pids.append(template_for(python).pid)
        return sum(pss_mib(pid) for pid in pids)
    finally:
        for kernel in kernels:
            await kernel.close()


async def tool_kernel_start(python: str, fork: bool) -> float:
    """Seconds from ``ToolKernel`` start to its first tool call's result (the demo's)."""
    began = time.perf_counter()
    async with ToolKernel(
        [get_weather], kernel=LocalKernel(python=python, fork_server=fork)
    ) as kernel:
        result = await kernel.execute(
            "import tools\nprint(await tools.get_weather('Ulm'))", timeout=TIMEOUT
        )
        assert result.stdout == "Sunny in Ulm\n", result
        return time.perf_counter() - began


async def measure(python: str, n: int, log: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        k: {"fork": [], "spawn": []} for k in ("reply", "cpu", "pss", "toolkernel")
    }
    began = time.perf_counter()
    template_for(python)
    raw["template_start_s"] = time.perf_counter() - began
    for round_ in range(ROUNDS):
        for kind in ("fork", "spawn") if round_ % 2 == 0 else ("spawn", "fork"):
            fork = kind == "fork"
            log(f"round {round_ + 1}: {kind}")
            starts = [await first_reply(python, fork) for _ in range(STARTS_PER_ROUND)]
            raw["reply"][kind].append(statistics.median(s[0] for s in starts))
            raw["cpu"][kind].append(statistics.median(s[1] for s in starts))
            raw["toolkernel"][kind].append(await tool_kernel_start(python, fork))
            raw["pss"][kind].append(await warm_kernels_pss(python, fork, n))
    return raw


def summarize(raw: dict[str, Any], n: int) -> list[dict[str, Any]]:
    def median(key: str, kind: str) -> float:
        return float(statistics.median(raw[key][kind]))

    rows = []
    for key, name, goal, unit in (
        ("reply", "start to first execute reply, fork / spawn", ("<=", 0.25), "ms"),
        ("cpu", "kernel CPU to first reply, fork / spawn", None, "ms"),
        ("pss", f"sum of PSS of {n} warm kernels, fork / spawn", ("<=", 0.6), "MiB"),
        ("toolkernel", "ToolKernel start to first tool call, fork / spawn", None, "ms"),
    ):
        fork, spawn = median(key, "fork"), median(key, "spawn")
        scale = 1000 if unit == "ms" else 1
        rows.append(
            {
                "name": name,
                "ratio": fork / spawn,
                "goal": goal,
                "detail": f"{fork * scale:.0f} / {spawn * scale:.0f} {unit}",
            }
        )
    absolute = median("reply", "fork") * 1000
    rows.append(
        {
            "name": "start to first execute reply, forked (ms)",
            "ratio": absolute,
            "goal": ("<=", 100),
            "detail": "the aim on a quiet machine",
        }
    )
    return judged(rows)


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(
        __doc__, argv, extra=[("--kernels", "warm kernels for the PSS sum (16)")]
    )
    n = int(args.kernels or 16)
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    try:
        raw = asyncio.run(measure(args.python, n, log))
    finally:
        stop_templates()
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = summarize(raw, n)
    report = {
        "python": args.python,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load": {"before": load_before, "after": load_after},
        "template_start_s": raw["template_start_s"],
        "results": rows,
        "raw": raw,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"load before: {load_before}\nload after:  {load_after}")
        print(f"template start: {raw['template_start_s'] * 1000:.0f} ms (once per interpreter)")
        print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
