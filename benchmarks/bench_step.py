"""One step of progtc 0.2's step API: progtc-kernel serve beside progtc serve, one run.

    python benchmarks/bench_step.py [--python KERNEL_PYTHON] [--json]

Both servers are driven by progtc 0.2.0's own client (``execute_code_step``), from
PyPI, in an environment of its own (built once under ``.kernel-envs/``), with the same
code: ``CALLS`` tool calls awaited one after another, so a run takes ``CALLS + 1``
steps. A step that continues a run sends the last call's result and gets the next call:

1. a step that continues a run            (progtc-kernel / progtc, goal <= 0.1)
   progtc's server re-runs the code from the start in a new process at every step;
   progtc-kernel serve sends the result into the code, waiting live in its kernel.
   progtc's client opens a new HTTP connection for each step; so does this row.
2. the same through one kept HTTP connection: the servers' own work (goal <= 0.1)
3. a run's first step                     (info: ours takes a warm kernel)

Each figure is the median of the steps of one run; the run is done ``RUNS`` times
(after a warm-up) and the median of those is reported, with the machine's load
(``uptime``) before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import command_line, judged, print_rows

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import build_env  # the tests' environment builder
from tests.servers import TOKEN, JupyterProcess, free_port

PROGTC = "0.2.0"
CALLS = 10
RUNS = 3

CODE = f"""
from tools import echo
for i in range({CALLS}):
    await echo(i)
print("done")
"""

# progtc's client, in its own interpreter: one run, its first step and every other;
# then one more run through one kept HTTP connection (httpx, as progtc's client uses,
# without its new connection per step), which leaves only the servers' own work.
DRIVER = """
import asyncio, json, sys, time
import httpx
from progtc import AsyncProgtcClient
from progtc.types import ExecuteCodeStepToolCalls

async def run(step_once):
    began = time.perf_counter()
    step = await step_once(None, None)
    first, steps = time.perf_counter() - began, []
    while step["type"] == "tool_call":
        results = [call["args"][0] for call in step["tool_calls"]]
        began = time.perf_counter()
        step = await step_once(step["state"], results)
        steps.append(time.perf_counter() - began)
    assert step["type"] == "success" and step["stdout"] == "done\\n", step
    return {"first": first, "steps": steps}

async def main():
    url, key, code = sys.argv[1], sys.argv[2], sys.argv[3]
    client = AsyncProgtcClient(base_url=url, api_key=key)
    await client.wait_for_server(timeout=60)

    async def progtc_step(state, results):
        step = await client.execute_code_step(
            code, tool_names=["echo"], state=state, tool_results=results
        )
        return step.model_dump(mode="json")

    report = {"client": await run(progtc_step)}
    async with httpx.AsyncClient(
        base_url=url, headers={"X-Progtc-API-Key": key}, timeout=60
    ) as http:

        async def kept_step(state, results):
            body = {"code": code, "tool_names": ["echo"], "state": state,
                    "tool_results": results}
            response = await http.post("/execute-code-step", json=body)
            response.raise_for_status()
            return response.json()

        report["kept"] = await run(kept_step)
    print(json.dumps(report))

asyncio.run(main())
"""


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def drive(python: str, url: str) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-c", DRIVER, url, TOKEN, CODE], capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        raise RuntimeError(f"progtc's client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def until_warm(process: JupyterProcess) -> None:
    """Until the pool is full again, so that a run's first step finds a warm kernel, as
    one does that reaches a server at rest."""
    server = process.server()
    while True:
        pool = (await server.request("GET", "progtc-kernel/api/status"))["pool"]
        if pool["warm"] >= pool["size"] and not pool["starting"]:
            return
        await asyncio.sleep(0.05)  # polling a benchmark's server


def kernelspec(home: Path, python: str) -> list[str]:
    """serve's options for kernels of ``python`` (none for this interpreter's own)."""
    if python == sys.executable:
        return []
    folder = home / "share" / "kernels" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "bench", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))
    return ["--kernel-name", "bench"]


async def runs(argv: list[str], home: Path, client: str, pool: bool) -> list[dict[str, Any]]:
    """Start a server, drive a warm-up run and ``RUNS`` runs through it."""
    port = free_port()
    process = JupyterProcess([*argv, "--port", str(port)], port, home, token=TOKEN)
    await process.start()
    try:
        out = []
        for _ in range(RUNS + 1):
            if pool:
                await until_warm(process)
            out.append(await asyncio.to_thread(drive, client, process.url))
        return out[1:]
    finally:
        process.stop()


async def measure(python: str, log: Any) -> dict[str, Any]:
    log(f"building progtc {PROGTC}'s environment (once)")
    progtc_python = build_env(f"progtc-server-{PROGTC}", [f"progtc[server]=={PROGTC}"])
    progtc_cli = str(Path(progtc_python).parent / "progtc")
    out: dict[str, Any] = {"load_before": load()}
    with tempfile.TemporaryDirectory(prefix="progtc-step-bench-") as home:
        log("progtc-kernel serve")
        ours = [sys.executable, "-m", "progtc_kernel.cli", "serve", "--api-key", TOKEN]
        out["ours"] = await runs(
            [*ours, *kernelspec(Path(home), python)], Path(home), progtc_python, pool=True
        )
        log(f"progtc serve ({PROGTC})")
        out["theirs"] = await runs(
            [progtc_cli, "serve", "--api-key", TOKEN], Path(home), progtc_python, pool=False
        )
    out["load_after"] = load()
    return out


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    def step(side: str, how: str = "client") -> float:
        return float(
            statistics.median(float(statistics.median(run[how]["steps"])) for run in raw[side])
        )

    def first(side: str) -> float:
        return float(statistics.median(float(run["client"]["first"]) for run in raw[side]))

    ms = 1000.0
    return judged(
        [
            {
                "name": "a step that continues a run",
                "ratio": step("ours") / step("theirs"),
                "goal": ("<=", 0.1),
                "detail": f"{step('ours') * ms:.1f} ms vs progtc {step('theirs') * ms:.1f} ms "
                f"(median of {RUNS} runs' medians of {CALLS} steps)",
            },
            {
                "name": "the same, one kept HTTP connection",
                "ratio": step("ours", "kept") / step("theirs", "kept"),
                "goal": ("<=", 0.1),
                "detail": f"{step('ours', 'kept') * ms:.1f} ms vs progtc "
                f"{step('theirs', 'kept') * ms:.1f} ms (the servers' own work)",
            },
            {
                "name": "a run's first step",
                "ratio": first("ours") / first("theirs"),
                "goal": None,
                "detail": f"{first('ours') * ms:.1f} ms vs progtc {first('theirs') * ms:.1f} ms "
                f"(median of {RUNS})",
            },
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(__doc__, argv)
    began = time.perf_counter()
    raw = asyncio.run(measure(args.python, log))
    rows = summarize(raw)
    report = {
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "kernel_python": args.python,
        "progtc": PROGTC,
        "duration_s": time.perf_counter() - began,
        "results": rows,
        "raw": raw,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"progtc's step API: progtc-kernel serve vs progtc {PROGTC} serve")
        print(f"  load before: {raw['load_before']}\n  load after:  {raw['load_after']}")
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
