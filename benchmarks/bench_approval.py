"""The cost of approval: a call that needs approval, with an approver that answers at
once, against the same call needing none.

    python benchmarks/bench_approval.py [--python KERNEL_PYTHON] [--json]

Without ``--python`` it runs once per ipykernel line the tests use (6.31 and 7), on
the tests' kernel environments (``tests/conftest.py``; built under ``.kernel-envs/``
on first use). Per line, on one ToolKernel:

1. awaited call approved by an async approver / the same call without approval
   (goal <= 1.3)
2. the same with a plain (sync) approver (for information)

Each figure is the median of 3 runs; each run alternates rounds of calls of each kind
in the same cell and takes the median per-call time, timed inside the kernel with
``time.perf_counter``.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import judged, main_per_line

from progtc_kernel import Approval, ApprovalRequest, LocalKernel, Timeout, Tool, ToolKernel

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3
ROUNDS = 6
CALLS = 200  # per round and kind
TIMEOUT = 120.0


async def echo(x: int) -> int:
    return x


async def approve_at_once(request: ApprovalRequest) -> Approval:
    return Approval.allow()


def approve_at_once_sync(request: ApprovalRequest) -> Approval:
    return Approval.allow()


# Rounds of each kind alternate, so that a slower stretch of the machine hits both.
RUN_CELL = """
import json as _j, statistics as _s, time as _t, tools as _tools
_bench = {{"plain": [], "approved": []}}
for _round in range({rounds}):
    for _kind, _call in (("plain", _tools.echo), ("approved", _tools.approved_echo)):
        for _ in range({n}):
            _t0 = _t.perf_counter()
            await _call(1)
            _bench[_kind].append(_t.perf_counter() - _t0)
print(_j.dumps({{_k: _s.median(_v) for _k, _v in _bench.items()}}))
"""


async def one_run(kernel: ToolKernel) -> dict[str, float]:
    result = await kernel.execute(RUN_CELL.format(rounds=ROUNDS, n=CALLS))
    result.raise_for_error()
    medians: dict[str, float] = json.loads(result.stdout)
    return medians


async def measure(python: str, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tools = [echo, Tool.from_function(echo, name="approved_echo", requires_approval=True)]
    for name, approver in (("async", approve_at_once), ("sync", approve_at_once_sync)):
        async with ToolKernel(
            tools,
            kernel=LocalKernel(python=python),
            approve=approver,
            timeout=Timeout(TIMEOUT, tool_call=TIMEOUT),
        ) as kernel:
            info: dict[str, Any] = dict(kernel.bridge.kernel_info or {})
            out["ipykernel"] = info.get("ipykernel")
            log(f"{out['ipykernel']}: {name} approver")
            await one_run(kernel)  # warm-up
            runs = [await one_run(kernel) for _ in range(RUNS)]
            out[name] = {
                "plain_s": statistics.median(run["plain"] for run in runs),
                "approved_s": statistics.median(run["approved"] for run in runs),
                "ratios": [run["approved"] / run["plain"] for run in runs],
            }
    return out


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    us, line = 1e6, f"ipykernel {raw['ipykernel']}"
    rows = []
    for name, goal in (("async", ("<=", 1.3)), ("sync", None)):
        figures = raw[name]
        rows.append(
            {
                "name": f"{line}: approved ({name} approver) / plain call",
                "ratio": statistics.median(figures["ratios"]),
                "goal": goal,
                "detail": f"approved {figures['approved_s'] * us:.0f} us, plain "
                f"{figures['plain_s'] * us:.0f} us (medians of {RUNS} runs; ratios "
                + ", ".join(f"{r:.2f}" for r in figures["ratios"])
                + ")",
            }
        )
    return judged(rows)


def main(argv: list[str] | None = None) -> int:
    return main_per_line(__doc__, argv, measure, summarize)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
