"""progtc-kernel performance check: each cost as a ratio against a floor from the same run.

    python benchmarks/bench.py [--python KERNEL_PYTHON] [--json]

Measures, on one ToolKernel (plus one bare kernel for memory):

1. awaited tool call round trip / ``input()`` round trip        (goal <= 1.2)
2. ``execute("pass", tools=<new set>)`` / bare ``execute_request`` (goal <= 1.3)
3. 1000 sequential calls / 1000 gathered calls (time)          (goal >= 3)
4. 1 MB argument + 1 MB result / small call round trip          (goal <= 15)
5. kernel RSS with the extension and tools / bare kernel RSS    (goal <= 1.10)
6. interrupt with 100 awaited calls pending, to the run's end    (goal: median <= 0.2 s;
   interrupting ``time.sleep`` in the bare kernel is shown beside it)

Per-call times are taken inside the kernel with ``time.perf_counter``; execution
times on the host. The kernel interpreter needs progtc-kernel installed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import LocalKernel, Timeout, ToolKernel, ToolRegistry
from progtc_kernel._wire import SignatureCheck, decode

SMALL_CALLS = 300  # sequential awaited calls, and input() round trips
ROUNDS = 6  # ... measured in alternating rounds
EXECUTIONS = 50  # trivial executions, each side
BULK_CALLS = 1000  # sequential vs gathered
BULK_REPEATS = 3
BIG_SIZE = 1 << 20  # 1 MiB string, sent and returned
BIG_CALLS = 20
INTERRUPTS = 10  # runs interrupted with PENDING calls outstanding
PENDING = 100
TIMEOUT = 60.0


# -- tools ----------------------------------------------------------------------------


async def echo(x: Any) -> Any:
    """Return the argument."""
    return x


async def alpha(x: int = 0) -> int:
    """Registration filler A."""
    return x


async def beta(x: int = 0) -> int:
    """Registration filler B."""
    return x


class Stalls:
    """Host tools that wait until cancelled; ``started`` once ``expected`` run."""

    def __init__(self) -> None:
        self.running = 0
        self.expected = 1
        self.started = asyncio.Event()

    async def stall(self) -> None:
        """Wait until cancelled."""
        self.running += 1
        if self.running >= self.expected:
            self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.running -= 1

    def expect(self, n: int) -> None:
        self.expected = n
        self.started.clear()


STALLS = Stalls()


# -- kernel-side code -----------------------------------------------------------------

SMALL_CALLS_CELL = """
import json as _j, statistics as _s, time as _t, tools as _tools
_ts = []
for _ in range({n}):
    _t0 = _t.perf_counter()
    await _tools.echo(1)
    _ts.append(_t.perf_counter() - _t0)
print(_j.dumps({{"median": _s.median(_ts), "mean": _s.fmean(_ts)}}))
"""

# Rounds of input() and of tool calls alternate; each appends its samples here.
ROUND_SETUP_CELL = "_bench = {'input': [], 'call': []}"

INPUT_CELL = """
import time as _t
for _ in range({n}):
    _t0 = _t.perf_counter()
    input()
    _bench["input"].append(_t.perf_counter() - _t0)
"""

CALLS_CELL = """
import time as _t, tools as _tools
for _ in range({n}):
    _t0 = _t.perf_counter()
    await _tools.echo(1)
    _bench["call"].append(_t.perf_counter() - _t0)
"""

READ_ROUNDS_CELL = """
import json as _j, statistics as _s
print(_j.dumps({_k: {"median": _s.median(_v), "mean": _s.fmean(_v), "n": len(_v)}
                for _k, _v in _bench.items()}))
"""

BULK_CELL = """
import asyncio as _a, json as _j, time as _t, tools as _tools
_t0 = _t.perf_counter()
for _i in range({n}):
    await _tools.echo(_i)
_seq = _t.perf_counter() - _t0
_t0 = _t.perf_counter()
_r = await _a.gather(*[_tools.echo(_i) for _i in range({n})])
_gat = _t.perf_counter() - _t0
assert _r == list(range({n}))
print(_j.dumps({{"sequential": _seq, "gathered": _gat}}))
"""

BIG_CELL = """
import json as _j, statistics as _s, time as _t, tools as _tools
_big = "x" * {size}
_ts = []
for _ in range({n}):
    _t0 = _t.perf_counter()
    _r = await _tools.echo(_big)
    _ts.append(_t.perf_counter() - _t0)
    assert len(_r) == {size}
del _r, _big
print(_j.dumps({{"median": _s.median(_ts), "mean": _s.fmean(_ts)}}))
"""

GC_CELL = "import gc as _gc; _gc.collect()"

STALL_CELL = """
import asyncio as _a, tools as _tools
await _a.gather(*[_tools.stall() for _ in range({n})])
"""
BLOCKING_STALL_CELL = "import tools\ndef run():\n    tools.stall()\nrun()"


# -- helpers --------------------------------------------------------------------------


def bare_kernel_manager(python: str) -> AsyncKernelManager:
    """An IPython kernel on ``python`` without the progtc_kernel extension."""
    spec = KernelSpec(
        argv=[python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="bench",
        language="python",
        interrupt_mode="signal",
        metadata={"debugger": False},
    )

    class OneSpec(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name != "bench":
                raise NoSuchKernel(kernel_name)
            return spec

    km = AsyncKernelManager(kernel_spec_manager=OneSpec(), kernel_name="bench")
    if os.name == "posix":  # the same transport as ToolKernel's: Unix sockets
        km.transport = "ipc"
        sockets = tempfile.mkdtemp(prefix="progtc-bench-")
        atexit.register(shutil.rmtree, sockets, ignore_errors=True)
        km.ip = os.path.join(sockets, "kernel")
    return km


def kernel_pid(km: Any) -> int:
    provisioner = getattr(km, "provisioner", None)
    pid = getattr(provisioner, "pid", None)
    if pid is None:
        pid = getattr(getattr(provisioner, "process", None), "pid", None)
    if pid is None:
        raise RuntimeError("cannot find the kernel's pid")
    return int(pid)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def run_cell(kernel: ToolKernel, code: str, **kwargs: Any) -> Any:
    result = await kernel.execute(code, timeout=TIMEOUT, **kwargs)
    if not result.ok:
        raise RuntimeError(f"benchmark cell failed: {result.error}")
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


async def plain_client(km: Any, *, iopub: bool, stdin: bool) -> AsyncKernelClient:
    # Not km.client(): that clones the manager's Session, session id included, so
    # its shell socket would share the ZMQ routing identity of ToolKernel's client.
    kc = AsyncKernelClient()
    kc.load_connection_info(km.get_connection_info())
    kc.allow_stdin = stdin
    kc.start_channels(shell=True, iopub=iopub, stdin=stdin, hb=False, control=False)
    await kc.wait_for_ready(timeout=TIMEOUT)
    return kc


def receive(kc: AsyncKernelClient, channel: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Read one message straight off a client's channel socket (the floor's fast path:
    one receive and one decode per message, as ToolKernel's own reader does)."""
    socket = getattr(kc, f"{channel}_channel").socket
    check = SignatureCheck(kc.session)

    async def recv() -> dict[str, Any]:
        # The same decoding as ToolKernel's own reader, so that both sides pay alike.
        return decode(kc.session, check, await socket.recv_multipart(copy=False))

    return recv


async def bare_execute(kc: AsyncKernelClient, code: str = "pass", *, api: bool = False) -> float:
    """Seconds from sending execute_request to having its execute_reply and idle.
    ``api``: read with jupyter_client's ``get_shell_msg``/``get_iopub_msg`` instead."""
    shell: Callable[[], Awaitable[dict[str, Any]]]
    iopub: Callable[[], Awaitable[dict[str, Any]]]
    if api:
        shell = functools.partial(kc.get_shell_msg, timeout=TIMEOUT)
        iopub = functools.partial(kc.get_iopub_msg, timeout=TIMEOUT)
    else:
        shell, iopub = receive(kc, "shell"), receive(kc, "iopub")
    start = time.perf_counter()
    await until_done(shell, iopub, kc.execute(code, allow_stdin=False))
    return time.perf_counter() - start


async def until_done(
    shell: Callable[[], Awaitable[dict[str, Any]]],
    iopub: Callable[[], Awaitable[dict[str, Any]]],
    msg_id: str,
) -> None:
    """Read until the request's execute_reply and its idle status have both come."""
    while (await shell())["parent_header"].get("msg_id") != msg_id:
        pass
    while True:
        msg = await iopub()
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["header"]["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
        ):
            return


async def run_input_cell(kc: AsyncKernelClient, n: int) -> None:
    """Run a cell of ``n`` input() calls, answering each input_request at once."""
    stdin = receive(kc, "stdin")
    msg_id = kc.execute(INPUT_CELL.format(n=n), allow_stdin=True, store_history=False)
    answered = 0
    while answered < n:
        msg = await asyncio.wait_for(stdin(), TIMEOUT)
        if msg["header"]["msg_type"] == "input_request":
            kc.input("")
            answered += 1
    while True:
        msg = await kc.get_shell_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id:
            if msg["content"]["status"] != "ok":
                raise RuntimeError(f"input cell failed: {msg['content']}")
            return


async def pending(kernel: ToolKernel, stalls: Stalls, n: int) -> asyncio.Future[Any]:
    """Start a run whose cell waits on ``n`` calls (awaited; one blocking call for 0),
    once all of them run on the host."""
    stalls.expect(max(n, 1))
    code = STALL_CELL.format(n=n) if n else BLOCKING_STALL_CELL
    run = asyncio.ensure_future(kernel.execute(code, timeout=TIMEOUT))
    await asyncio.wait_for(stalls.started.wait(), TIMEOUT)
    return run


async def interrupt_latency(kernel: ToolKernel, stalls: Stalls, n: int) -> float:
    """Seconds from interrupting a run with ``n`` calls pending to its result."""
    run = await pending(kernel, stalls, n)
    start = time.perf_counter()
    await kernel.interrupt()
    result = await run
    latency = time.perf_counter() - start
    if result.error is None or result.error.kind != "cancelled":
        raise RuntimeError(f"the interrupted run did not end as cancelled: {result.error}")
    return latency


async def bare_interrupt_latency(km: Any, kc: AsyncKernelClient) -> float:
    """The floor: interrupting ``time.sleep`` in a bare kernel, to its reply and idle."""
    shell, iopub = receive(kc, "shell"), receive(kc, "iopub")
    msg_id = kc.execute(
        "import time; print('sleeping', flush=True); time.sleep(30)", allow_stdin=False
    )
    while True:  # interrupt only once the sleep runs: earlier, ipykernel drops the request
        msg = await iopub()
        if msg["parent_header"].get("msg_id") == msg_id and msg["header"]["msg_type"] == "stream":
            break
    start = time.perf_counter()
    await km.interrupt_kernel()
    await asyncio.wait_for(until_done(shell, iopub, msg_id), TIMEOUT)
    return time.perf_counter() - start


async def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


# -- the benchmark --------------------------------------------------------------------


async def measure(python: str, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        # A bare kernel on the same interpreter: the memory and execute floors.
        log("bare kernel: start, RSS")
        bare_stack = contextlib.AsyncExitStack()
        stack.push_async_callback(bare_stack.aclose)
        bare = bare_kernel_manager(python)
        await bare.start_kernel()
        bare_stack.push_async_callback(bare.shutdown_kernel, now=True)
        bare_kc = await plain_client(bare, iopub=True, stdin=False)
        bare_stack.callback(bare_kc.stop_channels)
        await bare_execute(bare_kc, GC_CELL)
        out["rss_bare_mib"] = rss_mib(kernel_pid(bare))

        kernel = ToolKernel(
            [echo, STALLS.stall],
            kernel=LocalKernel(python=python),
            timeout=Timeout(TIMEOUT, tool_call=TIMEOUT),
        )
        started = time.perf_counter()
        await stack.enter_async_context(kernel)
        out["start_s"] = time.perf_counter() - started
        info = kernel.bridge.kernel_info
        out["kernel"] = dict(info) if info else {}

        # 5. Memory with the extension loaded, tools registered, a few calls made.
        log("tool kernel: warm-up, RSS")
        await run_cell(kernel, SMALL_CALLS_CELL.format(n=20))
        await run_cell(kernel, GC_CELL)
        out["rss_tools_mib"] = rss_mib(kernel_pid(kernel.kernel_manager))

        # 1. Awaited call vs input(), both timed inside the same kernel. The tool
        #    kernel's own client has no stdin channel: a second client answers input().
        log("1: awaited call vs input()")
        kc = await plain_client(kernel.kernel_manager, iopub=False, stdin=True)
        try:
            for warm_up in (True, False):
                await run_cell(kernel, ROUND_SETUP_CELL)
                for _ in range(1 if warm_up else ROUNDS):
                    await run_input_cell(kc, SMALL_CALLS // ROUNDS)
                    await run_cell(kernel, CALLS_CELL.format(n=SMALL_CALLS // ROUNDS))
            rounds = await run_cell(kernel, READ_ROUNDS_CELL)
            out["input"], out["call"] = rounds["input"], rounds["call"]
        finally:
            kc.stop_channels()

        # 2. A trivial execution sending a new tool set each time vs a bare
        #    execute_request to the bare kernel, interleaved. Tool sets are given as
        #    plain functions (as users write them) and as prebuilt ToolRegistry objects.
        log("2: execute with registration vs bare execute_request")
        sets: list[list[Any]] = [[echo, alpha], [echo, beta]]
        registries = [ToolRegistry(s) for s in sets]
        for registry in registries:
            _ = registry.fingerprint  # build the schemas once
        samples: dict[str, list[float]] = {"tools": [], "prebuilt": [], "bare": [], "api": []}
        for i in range(EXECUTIONS + 10):
            timings = {
                "tools": await timed(functools.partial(kernel.execute, "pass", tools=sets[i % 2])),
                "bare": await timed(lambda: bare_execute(bare_kc)),
                "prebuilt": await timed(
                    functools.partial(kernel.execute, "pass", tools=registries[i % 2])
                ),
                "api": await timed(lambda: bare_execute(bare_kc, api=True)),
            }
            if i >= 10:  # the first ten are warm-up
                for key, value in timings.items():
                    samples[key].append(value)
        for key, values in samples.items():
            out[f"exec_{key}_s"] = statistics.median(values)

        # 6. Interrupts: ours with 100 calls pending, and the bare kernel's floor.
        log(f"6: interrupt with {PENDING} calls pending")
        await bare_interrupt_latency(bare, bare_kc)  # warm-up
        out["interrupt_bare_s"] = statistics.median(
            [await bare_interrupt_latency(bare, bare_kc) for _ in range(INTERRUPTS // 2)]
        )
        await interrupt_latency(kernel, STALLS, PENDING)  # warm-up
        out["interrupt_s"] = statistics.median(
            [await interrupt_latency(kernel, STALLS, PENDING) for _ in range(INTERRUPTS)]
        )
        await bare_stack.aclose()

        # 3. Sequential vs gathered.
        log("3: 1000 sequential vs 1000 gathered")
        await run_cell(kernel, BULK_CELL.format(n=200))  # warm-up
        bulk = [await run_cell(kernel, BULK_CELL.format(n=BULK_CALLS)) for _ in range(BULK_REPEATS)]
        out["bulk_seq_s"] = statistics.median(r["sequential"] for r in bulk)
        out["bulk_gather_s"] = statistics.median(r["gathered"] for r in bulk)

        # 4. 1 MiB in, 1 MiB out.
        log("4: 1 MB argument + result")
        await run_cell(kernel, BIG_CELL.format(size=BIG_SIZE, n=3))  # warm-up
        out["big"] = await run_cell(kernel, BIG_CELL.format(size=BIG_SIZE, n=BIG_CALLS))
        out["small_again"] = await run_cell(kernel, SMALL_CALLS_CELL.format(n=SMALL_CALLS))

        await run_cell(kernel, GC_CELL)
        out["rss_tools_end_mib"] = rss_mib(kernel_pid(kernel.kernel_manager))
    return out


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    ms = 1000.0
    small = statistics.fmean([raw["call"]["median"], raw["small_again"]["median"]])
    rows = [
        {
            "name": "call / input()",
            "ratio": raw["call"]["median"] / raw["input"]["median"],
            "goal": ("<=", 1.2),
            "values": {
                "call_ms": raw["call"]["median"] * ms,
                "input_ms": raw["input"]["median"] * ms,
            },
            "detail": f"call {raw['call']['median'] * ms:.3f} ms, "
            f"input() {raw['input']['median'] * ms:.3f} ms (medians)",
        },
        {
            "name": "execute+tools / bare execute",
            "ratio": raw["exec_tools_s"] / raw["exec_bare_s"],
            "goal": ("<=", 1.3),
            "values": {
                "execute_tools_ms": raw["exec_tools_s"] * ms,
                "execute_prebuilt_registry_ms": raw["exec_prebuilt_s"] * ms,
                "bare_execute_ms": raw["exec_bare_s"] * ms,
                "bare_execute_get_msg_ms": raw["exec_api_s"] * ms,
            },
            "detail": f"execute(tools=new) {raw['exec_tools_s'] * ms:.2f} ms, bare "
            f"{raw['exec_bare_s'] * ms:.2f} ms; prebuilt ToolRegistry "
            f"{raw['exec_prebuilt_s'] * ms:.2f} ms "
            f"(x{raw['exec_prebuilt_s'] / raw['exec_bare_s']:.2f}); bare via "
            f"get_*_msg {raw['exec_api_s'] * ms:.2f} ms",
        },
        {
            "name": "1000 sequential / 1000 gathered",
            "ratio": raw["bulk_seq_s"] / raw["bulk_gather_s"],
            "goal": (">=", 3.0),
            "values": {
                "sequential_calls_per_s": BULK_CALLS / raw["bulk_seq_s"],
                "gathered_calls_per_s": BULK_CALLS / raw["bulk_gather_s"],
            },
            "detail": f"sequential {BULK_CALLS / raw['bulk_seq_s']:,.0f} calls/s, "
            f"gathered {BULK_CALLS / raw['bulk_gather_s']:,.0f} calls/s",
        },
        {
            "name": "1 MB call / small call",
            "ratio": raw["big"]["median"] / small,
            "goal": ("<=", 15.0),
            "values": {"big_call_ms": raw["big"]["median"] * ms, "small_call_ms": small * ms},
            "detail": f"1 MB {raw['big']['median'] * ms:.2f} ms, small {small * ms:.3f} ms",
        },
        {
            "name": "RSS tools / bare",
            "ratio": raw["rss_tools_mib"] / raw["rss_bare_mib"],
            "goal": ("<=", 1.10),
            "values": {
                "tools_kernel_mib": raw["rss_tools_mib"],
                "bare_kernel_mib": raw["rss_bare_mib"],
                "tools_kernel_end_mib": raw["rss_tools_end_mib"],
            },
            "detail": f"{raw['rss_tools_mib']:.1f} MiB vs {raw['rss_bare_mib']:.1f} MiB "
            f"(after the run: {raw['rss_tools_end_mib']:.1f} MiB)",
        },
        {
            "name": f"interrupt, {PENDING} calls pending (s)",
            "ratio": raw["interrupt_s"],
            "goal": ("<=", 0.2),
            "values": {
                "interrupt_ms": raw["interrupt_s"] * ms,
                "bare_sleep_interrupt_ms": raw["interrupt_bare_s"] * ms,
            },
            "detail": f"{raw['interrupt_s'] * ms:.0f} ms to the run's end (median of "
            f"{INTERRUPTS}); interrupting time.sleep in a bare kernel: "
            f"{raw['interrupt_bare_s'] * ms:.0f} ms",
        },
    ]
    return judged(rows)


# -- what every benchmark here shares -------------------------------------------------


def command_line(
    doc: str,
    argv: list[str] | None,
    extra: Sequence[tuple[str, str]] = (),
    python_default: str | None = sys.executable,
) -> tuple[argparse.Namespace, Callable[[str], None]]:
    """``--python`` and ``--json`` (and ``extra`` options: flag and help, taking a
    value), and a progress log that ``--json`` silences."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--python",
        default=python_default,
        help="kernel interpreter (default: "
        + ("this one)" if python_default else "one built for the run)"),
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    for flag, help_text in extra:
        parser.add_argument(flag, help=help_text)
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        if not args.json:
            print(f"  .. {text}", file=sys.stderr, flush=True)

    return args, log


def ipykernel_lines(python: str | None) -> list[str]:
    """The kernel interpreter given, else one per ipykernel line the tests use (their
    environments, built on first use as the tests build them)."""
    if python is not None:
        return [python]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from tests.conftest import LINES, kernel_env

    return [kernel_env(line) for line in LINES]


def main_per_line(
    doc: str,
    argv: list[str] | None,
    measure: Callable[[str, Callable[[str], None]], Coroutine[Any, Any, dict[str, Any]]],
    summarize: Callable[[dict[str, Any]], list[dict[str, Any]]],
) -> int:
    """Measure on each ipykernel line (or ``--python``), then print the rows (or the
    JSON report) with the machine's load; exit 1 if a goal was missed."""
    args, log = command_line(doc, argv, python_default=None)
    raws = [asyncio.run(measure(python, log)) for python in ipykernel_lines(args.python)]
    rows = [row for raw in raws for row in summarize(raw)]
    if args.json:
        print(json.dumps({"results": rows, "raw": raws, "load": os.getloadavg()}, indent=2))
    else:
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


def judged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark each row met or missed against its goal (``None``: for information)."""
    for row in rows:
        if row["goal"] is None:
            row["pass"], row["goal"] = True, "(info)"
            continue
        op, goal = row["goal"]
        row["pass"] = row["ratio"] <= goal if op == "<=" else row["ratio"] >= goal
        row["goal"] = f"{op} {goal:g}"
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        verdict = "PASS" if row["pass"] else "MISS"
        print(
            f"{row['name']:<{width}}  {row['ratio']:7.2f}  goal {row['goal']:<7} "
            f"{verdict}  {row['detail']}"
        )


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(__doc__, argv)
    gc.collect()
    began = time.perf_counter()
    raw = asyncio.run(measure(args.python, log))
    rows = summarize(raw)
    report = {
        "python": args.python,
        "kernel": raw["kernel"],
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "duration_s": time.perf_counter() - began,
        "results": rows,
        "raw": raw,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        kernel = raw["kernel"]
        print(
            f"kernel: {args.python} (ipykernel {kernel['ipykernel']}, Python "
            f"{kernel['python']}, shell replies: {kernel['shell_replies']}); "
            f"start {raw['start_s']:.2f} s; run {report['duration_s']:.1f} s"
        )
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
