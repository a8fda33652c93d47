"""The cost of tracing: a tool call in a traced run (the OpenTelemetry SDK's tracer
provider, spans kept by its in-memory exporter) against the same call untraced.

    python benchmarks/bench_tracing.py [--python KERNEL_PYTHON] [--json]

Without ``--python`` it runs once per ipykernel line the tests use (6.31 and 7), on
the tests' kernel environments (``tests/conftest.py``; built under ``.kernel-envs/``
on first use). Per line, on one ToolKernel:

1. traced call (SDK provider, in-memory exporter: a span per call, the traceparent
   sent with each) / untraced call (goal <= 1.3)
2. a call in a run with opentelemetry-api installed but no tracer provider set (its
   no-op spans) / untraced call (for information)
3. the host's own time per traced call: a tool call's span started and ended, with
   the SDK's provider (for information; the round trip it adds to is above)

"Untraced" is the path taken without opentelemetry-api (``tracing.ENABLED`` off in
this process). Runs of each kind alternate, so that a slower stretch of the machine
hits both; each figure is the median of 3 runs, each run the median per-call time
over its cells, timed inside the kernel with ``time.perf_counter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import command_line, ipykernel_lines, judged, print_rows
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from progtc_kernel import LocalKernel, Timeout, ToolKernel
from progtc_kernel.host import tracing

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3
ROUNDS = 10  # cells of each kind per run, alternating
CALLS = 100  # per cell
TIMEOUT = 120.0
SPANS = 5000  # per run of span_cost

CELL = """
import json as _j, statistics as _s, time as _t, tools as _tools
_times = []
for _ in range({n}):
    _t0 = _t.perf_counter()
    await _tools.echo(1)
    _times.append(_t.perf_counter() - _t0)
print(_j.dumps(_s.median(_times)))
"""


async def echo(x: int) -> int:
    return x


async def one_cell(kernel: ToolKernel, traced: bool) -> float:
    tracing.ENABLED = traced  # read at each run and call: off is the path without the API
    try:
        result = await kernel.execute(CELL.format(n=CALLS))
    finally:
        tracing.ENABLED = True
    result.raise_for_error()
    return float(json.loads(result.stdout))


async def one_run(kernel: ToolKernel, exporter: InMemorySpanExporter) -> dict[str, float]:
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(ROUNDS):
        for kind in ("off", "on"):
            times[kind].append(await one_cell(kernel, kind == "on"))
            exporter.clear()
    return {kind: statistics.median(values) for kind, values in times.items()}


async def measure(python: str, log: Any, exporter: InMemorySpanExporter) -> dict[str, Any]:
    """One phase's figures on one kernel (the phase: whether a provider is set)."""
    async with ToolKernel(
        [echo], kernel=LocalKernel(python=python), timeout=Timeout(TIMEOUT, tool_call=TIMEOUT)
    ) as kernel:
        info: dict[str, Any] = dict(kernel.bridge.kernel_info or {})
        log(f"{info.get('ipykernel')}: provider {type(trace.get_tracer_provider()).__name__}")
        await one_run(kernel, exporter)  # warm-up
        runs = [await one_run(kernel, exporter) for _ in range(RUNS)]
    return {
        "ipykernel": info.get("ipykernel"),
        "off_s": statistics.median(run["off"] for run in runs),
        "on_s": statistics.median(run["on"] for run in runs),
        "ratios": [run["on"] / run["off"] for run in runs],
    }


def span_cost() -> float:
    """Seconds of host time per tool-call span (started, made current, ended)."""
    call = {"id": 1, "tool": "echo", "arguments": {"x": 1}}
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(SPANS):
            span, token = tracing.start_tool_call(call, None, False)
            tracing.end_tool_call(span, token, error_type=None)
        times.append((time.perf_counter() - started) / SPANS)
    return statistics.median(times)


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    us, line = 1e6, f"ipykernel {raw['ipykernel']}"
    rows = []
    for phase, what, goal in (
        ("sdk", "traced (SDK, in-memory exporter)", ("<=", 1.3)),
        ("api", "API without a provider", None),
    ):
        figures = raw[phase]
        rows.append(
            {
                "name": f"{line}: {what} / untraced call",
                "ratio": statistics.median(figures["ratios"]),
                "goal": goal,
                "detail": f"on {figures['on_s'] * us:.0f} us, off {figures['off_s'] * us:.0f} "
                f"us (medians of {RUNS} runs; ratios "
                + ", ".join(f"{r:.2f}" for r in figures["ratios"])
                + ")",
            }
        )
    return judged(rows)


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(__doc__, argv, python_default=None)
    exporter = InMemorySpanExporter()
    pythons = ipykernel_lines(args.python)
    # First with no tracer provider set (the API's no-op spans), then with the SDK's.
    api = [asyncio.run(measure(python, log, exporter)) for python in pythons]
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    sdk = [asyncio.run(measure(python, log, exporter)) for python in pythons]
    raws = [
        {"ipykernel": a["ipykernel"], "api": a, "sdk": s} for a, s in zip(api, sdk, strict=True)
    ]
    per_span = span_cost()
    exporter.clear()
    rows = [row for raw in raws for row in summarize(raw)]
    untraced = raws[-1]["sdk"]["off_s"]
    rows += judged(
        [
            {
                "name": "host time per span, added to an untraced call (estimate)",
                "ratio": (untraced + per_span) / untraced,
                "goal": None,
                "detail": f"{per_span * 1e6:.0f} us per span (SDK, in-memory exporter; "
                f"median of {RUNS} runs of {SPANS})",
            }
        ]
    )
    if args.json:
        print(json.dumps({"results": rows, "raw": raws, "load": os.getloadavg()}, indent=2))
    else:
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
