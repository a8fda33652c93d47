"""What ProgrammaticToolset saves an agent's context, and what a script costs.

    python benchmarks/bench_toolset.py [--python KERNEL_PYTHON] [--json]

1. One task, done two ways: find the three cheapest products in stock among 20,
   whose full records (about 10 kB each, 200 kB in all) a lookup tool returns.
   Direct tool calls put every record in the model's context; one script puts in
   the environment's instructions, the script and its small result. Reported: the
   bytes the context receives each way, and their ratio.
2. ``execute_tool_script`` of a trivial script / a bare ``execute_request`` on a
   bare kernel of the same interpreter, read the same way      (goal <= 1.5)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from typing import Any

from bench import bare_execute, bare_kernel_manager, command_line, plain_client

from progtc_kernel import LocalKernel, ProgrammaticToolset, ToolKernel

PRODUCTS = 20
EXECUTIONS = 40

TASK_SCRIPT = """\
import asyncio
from tools import lookup_product

async def run():
    records = await asyncio.gather(*(lookup_product(f"SKU-{n:03d}") for n in range(20)))
    in_stock = [r for r in records if r["stock"] > 0]
    cheapest = sorted(in_stock, key=lambda r: r["price"])[:3]
    return {"cheapest": [{"sku": r["sku"], "name": r["name"], "price": r["price"]}
                         for r in cheapest]}
"""
TRIVIAL_SCRIPT = "def run():\n    return {}"


async def lookup_product(sku: str) -> dict[str, Any]:
    """The full record of a product: name, price, stock, description and reviews."""
    n = int(sku.split("-")[1])
    return {
        "sku": sku,
        "name": f"Product {n}",
        "price": round(10 + (n * 37) % 90 + 0.99, 2),
        "stock": 0 if n % 4 == 0 else n,
        "description": f"Product {n} is a fine product. " * 210,
        "reviews": [
            {"stars": (n + i) % 5 + 1, "text": f"Review {i} of product {n}. " * 12}
            for i in range(12)
        ],
    }


def context_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


async def measure(python: str, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log("1: the task, with direct tool calls and with one script")
    direct = [await lookup_product(f"SKU-{n:03d}") for n in range(PRODUCTS)]
    out["direct_bytes"] = sum(context_bytes(record) for record in direct)
    async with contextlib.AsyncExitStack() as stack:
        toolset = await stack.enter_async_context(
            ProgrammaticToolset(
                [lookup_product], kernel=ToolKernel(kernel=LocalKernel(python=python))
            )
        )
        environment = await toolset.get_execution_environment()
        answer = await toolset.execute_tool_script(TASK_SCRIPT)
        out["answer"] = json.loads(answer)
        out["script_bytes"] = (
            context_bytes(environment) + len(TASK_SCRIPT.encode()) + len(answer.encode())
        )
        out["answer_bytes"] = len(answer.encode())

        log("2: a trivial script vs a bare execute_request")
        bare = bare_kernel_manager(python)
        await bare.start_kernel()
        stack.push_async_callback(bare.shutdown_kernel, now=True)
        client = await plain_client(bare, iopub=True, stdin=False)
        stack.callback(client.stop_channels)
        samples: dict[str, list[float]] = {"script": [], "bare": []}
        for i in range(EXECUTIONS + 5):
            started = time.perf_counter()
            await toolset.execute_tool_script(TRIVIAL_SCRIPT)
            script = time.perf_counter() - started
            plain = await bare_execute(client)
            if i >= 5:  # warm-up
                samples["script"].append(script)
                samples["bare"].append(plain)
        out["script_s"] = statistics.median(samples["script"])
        out["bare_s"] = statistics.median(samples["bare"])
    return out


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(__doc__, argv)
    raw = asyncio.run(measure(args.python, log))
    saving = raw["direct_bytes"] / raw["script_bytes"]
    overhead = raw["script_s"] / raw["bare_s"]
    if args.json:
        print(
            json.dumps({"raw": raw, "context_ratio": saving, "overhead_ratio": overhead}, indent=2)
        )
    else:
        print(
            f"context, direct calls / one script  {saving:7.1f}x  "
            f"({raw['direct_bytes']:,} bytes vs {raw['script_bytes']:,}: instructions, "
            f"script and a {raw['answer_bytes']}-byte answer)"
        )
        verdict = "PASS" if overhead <= 1.5 else "MISS"
        print(
            f"trivial script / bare execute     {overhead:7.2f}   goal <= 1.5  {verdict}  "
            f"({raw['script_s'] * 1000:.2f} ms vs {raw['bare_s'] * 1000:.2f} ms)"
        )
    return 0 if overhead <= 1.5 else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
