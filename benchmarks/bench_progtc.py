"""progtc-kernel serve beside progtc serve, each driven by its own client, in one run.

    python benchmarks/bench_progtc.py [--json]

``progtc serve`` is progtc 0.2.0 from PyPI, in an environment of its own (built
once under ``.kernel-envs/``); ``progtc-kernel serve`` is this package, with its
default pool of two warm kernels. The same code and tools go to both:

1. ``execute_code`` of ``print("hi")``, per call       (progtc-kernel / progtc, goal <= 0.1)
2. one sequential tool call: 50 awaited one after another in a run, timed by the
   code itself, per call                                              (goal <= 0.05)
3. 1000 gathered calls in one run, timed by the code: calls per second
                                                           (goal: >= 10x progtc's)
4. memory: resident set of each server with its processes, idle after the runs (info)
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import command_line, judged, print_rows

from progtc_kernel import AsyncProgtcClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import build_env  # the tests' environment builder
from tests.servers import TOKEN, JupyterProcess, free_port

PROGTC = "0.2.0"
# Timed runs of each code, after one warm-up.
REPEATS = {"hi": 20, "sequential": 5, "gather": 5}
SEQUENTIAL = 50
GATHERED = 1000

HI = 'print("hi")'
# The code times its own calls, so that the run's fixed costs stay out of it.
SEQUENTIAL_CODE = f"""
import time
from tools import echo
began = time.perf_counter()
for i in range({SEQUENTIAL}):
    await echo(i)
print(time.perf_counter() - began)
"""
GATHER_CODE = f"""
import asyncio, time
from tools import echo
began = time.perf_counter()
values = await asyncio.gather(*(echo(i) for i in range({GATHERED})))
assert values == list(range({GATHERED}))
print(time.perf_counter() - began)
"""

# The progtc side runs in its own interpreter: this script drives progtc's client.
PROGTC_DRIVER = """
import asyncio, json, sys, time
from progtc import AsyncProgtcClient

async def echo(x):
    return x

async def main():
    url, key = sys.argv[1], sys.argv[2]
    codes, repeats = json.loads(sys.argv[3]), json.loads(sys.argv[4])
    client = AsyncProgtcClient(base_url=url, api_key=key)
    await client.wait_for_server(timeout=60)
    times = {}
    for name, code in codes.items():
        await client.execute_code(code, {"echo": echo})  # warm-up
        runs = []
        for _ in range(repeats[name]):
            began = time.perf_counter()
            result = await client.execute_code(code, {"echo": echo}, timeout=300)
            runs.append([time.perf_counter() - began, result.stdout])
            assert result.type.value == "success", result
        times[name] = runs
    print(json.dumps(times))

asyncio.run(main())
"""


async def echo(x: Any) -> Any:
    return x


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


async def until_warm(client: AsyncProgtcClient) -> None:
    """Until the server's pool is full again: each request then finds a warm kernel,
    as one does that reaches a server at rest. (A kernel start takes far longer than
    a run: back to back, runs would wait for kernels to start, which is measured
    apart, as throughput.)"""
    server = client._server()
    while True:
        pool = (await server.request("GET", "progtc-kernel/api/status"))["pool"]
        if pool["warm"] >= pool["size"] and not pool["starting"]:
            return
        await asyncio.sleep(0.05)


async def ours(
    url: str, codes: dict[str, str], repeats: dict[str, int]
) -> dict[str, list[tuple[float, str]]]:
    client = AsyncProgtcClient(url, api_key=TOKEN)
    await client.wait_for_server(timeout=60)
    times: dict[str, list[tuple[float, str]]] = {}
    for name, code in codes.items():
        await client.execute_code(code, {"echo": echo})  # warm-up
        runs = []
        for _ in range(repeats[name]):
            await until_warm(client)
            began = time.perf_counter()
            result = await client.execute_code(code, {"echo": echo}, timeout=300)
            runs.append((time.perf_counter() - began, result.stdout))
            assert result.type.value == "success", result
        times[name] = runs
    await client.aclose()
    return times


def theirs(python: str, url: str, codes: dict[str, str], repeats: dict[str, int]) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-c", PROGTC_DRIVER, url, TOKEN, json.dumps(codes), json.dumps(repeats)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode:
        raise RuntimeError(f"progtc's client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def with_server(
    argv: list[str], home: Path, run: Callable[[str], Awaitable[Any]], log: Callable[[str], None]
) -> tuple[Any, float]:
    """Start a server, run ``run(url)`` against it, and measure its memory after."""
    port = free_port()
    process = JupyterProcess([*argv, "--port", str(port)], port, home)
    await process.start()
    try:
        out = await run(process.url)
        assert process.process is not None
        await asyncio.sleep(2)  # let the pool refill before memory is read (a benchmark)
        return out, tree_rss_mib(process.process.pid)
    except Exception:
        log(f"the server's log ends with:\n{process.log_text()}")
        raise
    finally:
        process.stop()


async def measure(log: Callable[[str], None]) -> dict[str, Any]:
    codes = {"hi": HI, "sequential": SEQUENTIAL_CODE, "gather": GATHER_CODE}
    log(f"building progtc {PROGTC}'s environment (once)")
    progtc_python = build_env(f"progtc-server-{PROGTC}", [f"progtc[server]=={PROGTC}"])
    progtc_cli = str(Path(progtc_python).parent / "progtc")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="progtc-bench-") as home:
        log("progtc-kernel serve, driven by progtc_kernel.AsyncProgtcClient")
        out["ours"], out["ours_rss_mib"] = await with_server(
            [
                sys.executable,
                "-m",
                "progtc_kernel.cli",
                "serve",
                "--api-key",
                TOKEN,
                "--code-execution-timeout",
                "300",
            ],
            Path(home),
            lambda url: ours(url, codes, REPEATS),
            log,
        )
        log(f"progtc serve ({PROGTC}), driven by progtc.AsyncProgtcClient")
        out["theirs"], out["theirs_rss_mib"] = await with_server(
            [progtc_cli, "serve", "--api-key", TOKEN, "--code-execution-timeout", "300"],
            Path(home),
            lambda url: asyncio.to_thread(theirs, progtc_python, url, codes, REPEATS),
            log,
        )
    return out


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    ms = 1000.0

    def wall(side: str, name: str) -> float:
        return statistics.median(float(run[0]) for run in raw[side][name])

    def timed_inside(side: str, name: str) -> float:
        return statistics.median(float(run[1]) for run in raw[side][name])

    med = {side: {"hi": wall(side, "hi")} for side in ("ours", "theirs")}

    def per_call(side: str) -> float:
        return timed_inside(side, "sequential") / SEQUENTIAL

    def rate(side: str) -> float:
        return GATHERED / timed_inside(side, "gather")

    rows = [
        {
            "name": "execute_code('print(\"hi\")')",
            "ratio": med["ours"]["hi"] / med["theirs"]["hi"],
            "goal": ("<=", 0.1),
            "detail": f"{med['ours']['hi'] * ms:.1f} ms vs progtc {med['theirs']['hi'] * ms:.1f}"
            f" ms (median of {REPEATS['hi']})",
        },
        {
            "name": "one sequential tool call",
            "ratio": per_call("ours") / per_call("theirs"),
            "goal": ("<=", 0.05),
            "detail": f"{per_call('ours') * ms:.3f} ms vs progtc {per_call('theirs') * ms:.3f} ms",
        },
        {
            "name": f"{GATHERED} gathered calls: calls/s",
            "ratio": rate("ours") / rate("theirs"),
            "goal": (">=", 10.0),
            "detail": f"{rate('ours'):,.0f} vs progtc {rate('theirs'):,.0f} calls/s",
        },
        {
            "name": "server memory, idle",
            "ratio": raw["ours_rss_mib"] / raw["theirs_rss_mib"],
            "goal": None,
            "detail": f"{raw['ours_rss_mib']:.0f} MiB (server and 2 warm kernels) vs progtc "
            f"{raw['theirs_rss_mib']:.0f} MiB",
        },
    ]
    return judged(rows)


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(__doc__, argv)
    began = time.perf_counter()
    raw = asyncio.run(measure(log))
    rows = summarize(raw)
    report = {
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "progtc": PROGTC,
        "duration_s": time.perf_counter() - began,
        "results": rows,
        "raw": raw,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"progtc-kernel serve vs progtc {PROGTC} serve; run {report['duration_s']:.1f} s")
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
