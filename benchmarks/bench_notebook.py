"""A notebook whose cells call host tools, against the same notebook on plain nbclient.

    python benchmarks/bench_notebook.py [--python KERNEL_PYTHON] [--json]

The notebook has 20 cells that each make 10 awaited calls of ``lookup``. Run with
``execute_notebook``'s client (``ToolNotebookClient``), the calls are host tools;
run by plain nbclient, the first cell defines ``lookup`` as a local function
instead. Both start a kernel on the same interpreter and transport, run every
cell, and shut the kernel down; they alternate, and each figure is a median:

1. the whole run with tools / the whole run with local functions   (goal <= 1.3)
2. the cells alone, first start to last reply (for information)
   - both again with the calls kept on iopub, where nbclient's client sees and
     decodes each of them too (the route before calls took stdin)   (for information)
3. starting the kernel, and the bridge (for information)
4. shutting the kernel down (for information)
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from bench import command_line, judged, print_rows
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_notebook

from progtc_kernel import ToolBridge
from progtc_kernel.integrations.nbclient import ToolNotebookClient
from progtc_kernel.kernels.local import SPEC_NAME, single_spec

CELLS = 20
CALLS = 10  # per cell, awaited one after the other
RUNS = 5  # of each notebook, alternating

LOOKUP = '''
async def lookup(n: int) -> dict:
    """A record by number."""
    return {"n": n, "value": n * 2, "name": f"item {n}"}
'''
CELL = """
total = 0
for k in range({calls}):
    total += (await lookup({cell} * {calls} + k))["value"]
print(total)
"""


async def lookup(n: int) -> dict[str, Any]:
    """A record by number."""
    return {"n": n, "value": n * 2, "name": f"item {n}"}


def notebook(first_cell: str) -> NotebookNode:
    cells = [new_code_cell(first_cell)]
    cells += [new_code_cell(CELL.format(calls=CALLS, cell=i)) for i in range(CELLS)]
    nb: NotebookNode = new_notebook(cells=cells)
    return nb


class PlainClient(NotebookClient):
    """nbclient as it is, on the same kernel and transport as ToolNotebookClient's."""

    def __init__(self, nb: NotebookNode, python: str, **options: Any) -> None:
        super().__init__(nb, **options)
        self.python = python

    def create_kernel_manager(self) -> Any:
        km = self.km = AsyncKernelManager(
            kernel_spec_manager=single_spec(self.python), kernel_name=SPEC_NAME
        )
        if os.name == "posix":
            km.transport = "ipc"
            km.ip = os.path.join(tempfile.mkdtemp(prefix="progtc-bench-"), "kernel")
        return km


class Phases:
    """When a run's cells start and end, from nbclient's hooks."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.first_cell = 0.0
        self.last_reply = 0.0

    def hooks(self) -> dict[str, Any]:
        return {"on_cell_start": self.on_cell_start, "on_cell_executed": self.on_cell_executed}

    def on_cell_start(self, cell_index: int, **_: Any) -> None:
        if cell_index == 0:
            self.first_cell = time.perf_counter()

    def on_cell_executed(self, **_: Any) -> None:
        self.last_reply = time.perf_counter()

    def split(self) -> dict[str, float]:
        end = time.perf_counter()
        return {
            "whole": end - self.began,
            "start": self.first_cell - self.began,
            "cells": self.last_reply - self.first_cell,
            "shutdown": end - self.last_reply,
        }


def run(python: str, with_tools: bool, calls_on_stdin: bool = True) -> dict[str, float]:
    ToolBridge.calls_on_stdin = calls_on_stdin
    try:
        return _run(python, with_tools)
    finally:
        ToolBridge.calls_on_stdin = True


def _run(python: str, with_tools: bool) -> dict[str, float]:
    phases = Phases()
    if with_tools:
        nb = notebook("from tools import lookup")
        client: NotebookClient = ToolNotebookClient(
            nb, tools=[lookup], python=python, **phases.hooks()
        )
    else:
        nb = notebook(LOOKUP)
        client = PlainClient(nb, python, **phases.hooks())
    client.execute()
    expected = sum(2 * ((CELLS - 1) * CALLS + k) for k in range(CALLS))
    if "".join(output.text for output in nb.cells[-1].outputs) != f"{expected}\n":
        raise RuntimeError(f"unexpected output: {nb.cells[-1].outputs}")
    return phases.split()


def measure(python: str, log: Any) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {"tools": [], "local": [], "iopub": []}
    run(python, True)  # warm-up: imports, disk caches
    for i in range(RUNS):
        log(f"run {i + 1}/{RUNS}: with tools, with local functions, with tools on iopub")
        samples["tools"].append(run(python, True))
        samples["local"].append(run(python, False))
        samples["iopub"].append(run(python, True, calls_on_stdin=False))
    return {
        side: {phase: statistics.median(s[phase] for s in runs) for phase in runs[0]}
        for side, runs in samples.items()
    }


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    local = raw["local"]

    def row(
        name: str, phase: str, goal: tuple[str, float] | None, side: str = "tools"
    ) -> dict[str, Any]:
        tools = raw[side]
        return {
            "name": name,
            "ratio": tools[phase] / local[phase],
            "goal": goal,
            "detail": f"({tools[phase] * 1000:.0f} ms vs {local[phase] * 1000:.0f} ms)",
        }

    return judged(
        [
            row(
                f"{CELLS} cells x {CALLS} tool calls, whole run / local functions",
                "whole",
                ("<=", 1.3),
            ),
            row("  the cells alone", "cells", None),
            row("  whole run, calls on iopub / local functions", "whole", None, "iopub"),
            row("  the cells alone, calls on iopub", "cells", None, "iopub"),
            row("  starting the kernel (and the bridge)", "start", None),
            row("  shutting the kernel down", "shutdown", None),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(__doc__, argv)
    raw = measure(args.python, log)
    rows = summarize(raw)
    if args.json:
        print(json.dumps({"python": args.python, "results": rows, "raw": raw}, indent=2))
    else:
        print(f"kernel: {args.python}; medians of {RUNS} runs each")
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
