"""Sustained load: progtc-kernel serve, with and without the fork server, beside progtc serve.

    python benchmarks/bench_sustained.py [--json] [--executions N] [--rounds R]

Three servers, each on loopback, started afresh in each round (the rounds alternate
them, in the same run):

- ``fork``: ``progtc-kernel serve`` (its kernels forked from a template: the default
  on Linux);
- ``spawn``: ``progtc-kernel serve --no-fork-server`` (each kernel a new interpreter:
  the serve of before the fork server);
- ``progtc``: progtc 0.2.0's own ``progtc serve``, from PyPI, in an environment of
  its own (built once under ``.kernel-envs/``).

Each server gets ``CLIENTS`` (16) concurrent clients, each running executions back to
back until ``EXECUTIONS`` have been started or ``ROUND_SECONDS`` have passed; each
execution awaits one tool call. The clients are progtc 0.2.0's own
``AsyncProgtcClient`` for all three servers: the same client code for every system
(a new HTTP connection per execution, as it does), and the client progtc's server
was written for. Measured per server:

1. executions/s (fork / spawn, goal >= 3; fork / progtc, goal >= 15)
2. CPU-seconds per execution: the server's and its kernels' (utime + stime of the
   server's process tree, reaped children included, read from ``/proc`` before and
   after the run, after the pool refilled) (fork / spawn, goal <= 0.3)
3. p50 / p95 latency of one execution, and failures (goal: none)
4. processes of the server left after it stopped (goal: none)

Medians of ``--rounds`` (3) rounds, with the machine's load (``uptime``) before and after.
Linux only (``/proc``).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import command_line, judged, print_rows

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import build_env  # the tests' environment builder
from tests.servers import TOKEN, JupyterProcess, free_port, pool_status

PROGTC = "0.2.0"
CLIENTS = 16
EXECUTIONS = 64  # per server per round (at most)
ROUND_SECONDS = 90.0  # per server per round: no new execution starts after this
ROUNDS = 3
POOL_SIZE = 4
MAX_KERNELS = 24  # room for 16 leased kernels and the warm ones behind them

CODE = "from tools import echo\nprint(await echo(1))"

# The clients, in progtc's environment: CLIENTS workers sharing a budget of executions.
DRIVER = """
import asyncio, json, sys, time
from progtc import AsyncProgtcClient

async def echo(x):
    return x

async def main():
    url, key, code = sys.argv[1], sys.argv[2], sys.argv[3]
    clients, executions, seconds = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    client = AsyncProgtcClient(base_url=url, api_key=key)
    await client.wait_for_server(timeout=60)
    left = [executions]
    latencies, failures = [], []
    began = time.perf_counter()
    deadline = began + seconds

    async def worker():
        while left[0] > 0 and time.perf_counter() < deadline:
            left[0] -= 1
            start = time.perf_counter()
            try:
                result = await client.execute_code(code, {"echo": echo}, timeout=300)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            if result.type.value != "success" or result.stdout != "1\\n":
                failures.append(repr(result)[:300])
                continue
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - began
    print(json.dumps({"wall": wall, "latencies": latencies, "failures": failures}))

asyncio.run(main())
"""


def uptime() -> str:
    """The load averages over 1, 5 and 15 minutes, as ``uptime`` says them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    children, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process tree: each process's utime + stime, and its reaped
    children's (cutime + cstime: the kernels that already exited)."""
    ticks = 0
    for current in tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(pid: int) -> float:
    """CPU time of one process itself (utime + stime): the server without its kernels."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def left_behind(processes: dict[int, str | None], grace: float = 10.0) -> list[int]:
    """Which of these processes (pid: start time) still run ``grace`` seconds after
    their server stopped (a process on its way out is given that long)."""
    deadline = time.monotonic() + grace
    while (alive := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)  # a benchmark: polling /proc
    return alive


def still_running(processes: dict[int, str | None]) -> list[int]:
    """Which of these processes (pid: start time) still run (zombies count as gone)."""
    alive = []
    for pid, started in processes.items():
        with contextlib.suppress(OSError, IndexError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if start_time(pid) == started and state != "Z":
                alive.append(pid)
    return alive


def drive(python: str, url: str, executions: int, seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-c", DRIVER, url, TOKEN, CODE, str(CLIENTS), str(executions), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 600,
    )
    if done.returncode:
        raise RuntimeError(f"progtc's client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def settled(process: JupyterProcess, ours: bool) -> None:
    """Until the server is at rest: ours, once its pool is full and nothing is leased."""
    if not ours:
        await asyncio.sleep(1.0)  # progtc's server has no status to wait on (a benchmark)
        return
    while True:
        pool = (await pool_status(process))["pool"]
        if pool["warm"] >= pool["size"] and not pool["starting"] and not pool["leased"]:
            return
        await asyncio.sleep(0.05)


async def one_server(
    argv: list[str],
    ours: bool,
    home: Path,
    progtc_python: str,
    executions: int,
    seconds: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    port = free_port()
    process = JupyterProcess([*argv, "--port", str(port)], port, home)
    await process.start()
    try:
        assert process.process is not None
        pid = process.process.pid
        await settled(process, ours)
        cpu_before, server_before = tree_cpu_seconds(pid), own_cpu_seconds(pid)
        out = await asyncio.to_thread(drive, progtc_python, process.url, executions, seconds)
        await settled(process, ours)
        out["cpu_s"] = tree_cpu_seconds(pid) - cpu_before
        out["server_cpu_s"] = own_cpu_seconds(pid) - server_before
        processes = {p: start_time(p) for p in tree(pid) if p != pid}
    except Exception:
        log(f"the server's log ends with:\n{process.log_text()}")
        raise
    finally:
        process.stop()
    out["left_behind"] = left_behind(processes)
    return out


def servers(progtc_cli: str) -> dict[str, tuple[list[str], bool]]:
    ours = [
        sys.executable,
        "-m",
        "progtc_kernel.cli",
        "serve",
        "--api-key",
        TOKEN,
        "--code-execution-timeout",
        "300",
        "--pool-size",
        str(POOL_SIZE),
        "--max-kernels",
        str(MAX_KERNELS),
        "--pool-timeout",
        "none",
    ]
    return {
        "fork": ([*ours, "--fork-server"], True),
        "spawn": ([*ours, "--no-fork-server"], True),
        "progtc": (
            [progtc_cli, "serve", "--api-key", TOKEN, "--code-execution-timeout", "300"],
            False,
        ),
    }


async def measure(
    log: Callable[[str], None], executions: int, rounds: int, seconds: float
) -> dict[str, Any]:
    log(f"building progtc {PROGTC}'s environments (once)")
    server_python = build_env(f"progtc-server-{PROGTC}", [f"progtc[server]=={PROGTC}"])
    client_python = build_env(f"progtc-{PROGTC}", [f"progtc=={PROGTC}"])
    progtc_cli = str(Path(server_python).parent / "progtc")
    runs: dict[str, list[dict[str, Any]]] = {}
    loads = []
    for round_number in range(rounds):
        order = list(servers(progtc_cli).items())
        if round_number % 2:
            order.reverse()  # alternate which server runs first
        for name, (argv, ours) in order:
            with tempfile.TemporaryDirectory(prefix="progtc-sustained-") as home:
                load = uptime()
                log(f"round {round_number + 1}: {name} (load {load})")
                run = await one_server(
                    argv, ours, Path(home), client_python, executions, seconds, log
                )
            run["load"] = load
            loads.append(load)
            runs.setdefault(name, []).append(run)
            log(f"  {summary_line(run)}")
    return {"runs": runs, "loads": loads}


def figures(run: dict[str, Any]) -> dict[str, float]:
    done = len(run["latencies"])
    latencies = sorted(run["latencies"]) or [float("nan")]
    return {
        "rate": done / run["wall"],
        "cpu": run["cpu_s"] / max(done, 1),
        "server_cpu": run.get("server_cpu_s", 0.0) / max(done, 1),
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "done": done,
        "failures": len(run["failures"]),
        "left": len(run["left_behind"]),
    }


def summary_line(run: dict[str, Any]) -> str:
    f = figures(run)
    return (
        f"{f['done']} executions, {f['rate']:.2f}/s, {f['cpu'] * 1000:.0f} ms CPU each "
        f"({f['server_cpu'] * 1000:.0f} ms of it the server process's), "
        f"p50 {f['p50']:.2f} s, p95 {f['p95']:.2f} s, {f['failures']} failures, "
        f"{f['left']} processes left"
    )


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    med = {
        name: {
            key: statistics.median(figures(run)[key] for run in runs)
            for key in ("rate", "cpu", "p50", "p95")
        }
        for name, runs in raw["runs"].items()
    }
    failures = sum(figures(run)["failures"] for runs in raw["runs"].values() for run in runs)
    left = sum(figures(run)["left"] for name in ("fork", "spawn") for run in raw["runs"][name])
    left_progtc = sum(figures(run)["left"] for run in raw["runs"]["progtc"])

    def rate(name: str) -> str:
        return f"{med[name]['rate']:.2f}/s"

    return judged(
        [
            {
                "name": "executions/s, fork / spawn",
                "ratio": med["fork"]["rate"] / med["spawn"]["rate"],
                "goal": (">=", 3.0),
                "detail": f"{rate('fork')} vs {rate('spawn')}",
            },
            {
                "name": f"executions/s, fork / progtc {PROGTC}",
                "ratio": med["fork"]["rate"] / med["progtc"]["rate"],
                "goal": (">=", 15.0),
                "detail": f"{rate('fork')} vs {rate('progtc')}",
            },
            {
                "name": "CPU-s per execution, fork / spawn",
                "ratio": med["fork"]["cpu"] / med["spawn"]["cpu"],
                "goal": ("<=", 0.3),
                "detail": f"{med['fork']['cpu'] * 1000:.0f} ms vs {med['spawn']['cpu'] * 1000:.0f}"
                f" ms (progtc {med['progtc']['cpu'] * 1000:.0f} ms)",
            },
            {
                "name": "p50 latency, fork / spawn",
                "ratio": med["fork"]["p50"] / med["spawn"]["p50"],
                "goal": None,
                "detail": f"{med['fork']['p50'] * 1000:.0f} ms vs {med['spawn']['p50'] * 1000:.0f}"
                f" ms (progtc {med['progtc']['p50'] * 1000:.0f} ms)",
            },
            {
                "name": "p95 latency, fork / spawn",
                "ratio": med["fork"]["p95"] / med["spawn"]["p95"],
                "goal": None,
                "detail": f"{med['fork']['p95'] * 1000:.0f} ms vs {med['spawn']['p95'] * 1000:.0f}"
                f" ms (progtc {med['progtc']['p95'] * 1000:.0f} ms)",
            },
            {
                "name": "failures, all servers and rounds",
                "ratio": float(failures),
                "goal": ("<=", 0.0),
                "detail": f"{failures}",
            },
            {
                "name": "processes left after stopping, progtc-kernel serve",
                "ratio": float(left),
                "goal": ("<=", 0.0),
                "detail": f"{left} (progtc serve: {left_progtc})",
            },
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(
        __doc__,
        argv,
        extra=[
            ("--executions", f"executions per server per round (default {EXECUTIONS})"),
            ("--rounds", f"rounds (default {ROUNDS})"),
            ("--seconds", f"most seconds per server per round (default {ROUND_SECONDS:g})"),
        ],
        python_default=None,
    )
    executions = int(args.executions or EXECUTIONS)
    rounds = int(args.rounds or ROUNDS)
    seconds = float(args.seconds or ROUND_SECONDS)
    began = time.perf_counter()
    load_before = uptime()
    raw = asyncio.run(measure(log, executions, rounds, seconds))
    rows = summarize(raw)
    report = {
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "progtc": PROGTC,
        "clients": CLIENTS,
        "load_before": load_before,
        "load_after": uptime(),
        "duration_s": time.perf_counter() - began,
        "results": rows,
        "raw": raw,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"sustained load, {CLIENTS} clients (progtc {PROGTC}'s client), {rounds} rounds; "
            f"load {report['load_before']} -> {report['load_after']}; "
            f"run {report['duration_s']:.0f} s"
        )
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
