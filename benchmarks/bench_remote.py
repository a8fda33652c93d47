"""progtc-kernel over a Jupyter Server's kernel websocket, against floors from the same run.

    python benchmarks/bench_remote.py [--python KERNEL_PYTHON] [--json]

Starts a Jupyter Server on loopback (default settings, iopub rate limit included)
with a kernelspec for ``--python``, a ``ToolKernel`` there and a local one on the
same interpreter, then measures:

1. awaited tool call over the websocket / ``input()`` round trip over the same
   websocket                                                        (goal <= 1.2)
   - the same with calls kept on iopub (the route before calls took stdin), on a
     second kernel of the same server                               (for information)
2. tool call over the websocket / tool call over local ZMQ, shown beside its floor:
   ``input()`` over the websocket / ``input()`` over ZMQ             (for information)
3. 2000 gathered calls over the websocket: calls/s and calls lost   (goal: none lost)

Per-call times are taken inside the kernel with ``time.perf_counter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    CALLS_CELL,
    INPUT_CELL,
    READ_ROUNDS_CELL,
    ROUND_SETUP_CELL,
    ROUNDS,
    SMALL_CALLS,
    command_line,
    echo,
    judged,
    plain_client,
    print_rows,
    run_cell,
    run_input_cell,
)

from progtc_kernel import LocalKernel, RemoteKernel, Timeout, ToolBridge, ToolKernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import jupyter_server, kernelspec  # the tests' server harness

GATHERED = 2000
GATHER_REPEATS = 3
TIMEOUT = 120.0

ROUTES_CELL = """
import json as _j
from progtc_kernel.kernel_side import extension as _e
print(_j.dumps(dict(_e.current().sent_routes)))
"""

GATHER_CELL = """
import asyncio as _a, json as _j, time as _t, tools as _tools
_t0 = _t.perf_counter()
_r = await _a.gather(*[_tools.echo(_i) for _i in range({n})])
_s = _t.perf_counter() - _t0
print(_j.dumps({{"seconds": _s, "answered": sum(1 for _i, _v in enumerate(_r) if _v == _i)}}))
"""


async def input_rounds_over(kernel: ToolKernel, n: int) -> None:
    """Run a cell of ``n`` input() calls through ToolKernel's own connection (the
    websocket), answering each input_request on that connection's stdin channel."""
    transport = kernel.bridge.transport
    done = asyncio.get_running_loop().create_future()
    msg_id = ""

    def on_message(channel: str, msg: dict[str, Any]) -> None:
        if msg["parent_header"].get("msg_id") != msg_id:
            return
        if channel == "stdin" and msg["header"]["msg_type"] == "input_request":
            transport.send("stdin", "input_reply", {"value": ""})
        elif (
            channel == "shell" and msg["header"]["msg_type"] == "execute_reply" and not done.done()
        ):
            done.set_result(msg["content"]["status"])

    kernel.bridge.add_message_listener(on_message)
    msg_id = transport.send(
        "shell",
        "execute_request",
        {
            "code": INPUT_CELL.format(n=n),
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": True,
            "stop_on_error": True,
        },
    )
    status = await asyncio.wait_for(done, TIMEOUT)
    kernel.bridge.remove_message_listener(on_message)
    if status != "ok":
        raise RuntimeError(f"input cell failed: {status}")


async def calls_and_inputs(
    kernel: ToolKernel, answer_inputs: Callable[[int], Any]
) -> dict[str, Any]:
    """Alternating rounds of input() and awaited calls, timed inside the kernel."""
    for warm_up in (True, False):
        await run_cell(kernel, ROUND_SETUP_CELL)
        for _ in range(1 if warm_up else ROUNDS):
            await answer_inputs(SMALL_CALLS // ROUNDS)
            await run_cell(kernel, CALLS_CELL.format(n=SMALL_CALLS // ROUNDS))
    return dict(await run_cell(kernel, READ_ROUNDS_CELL))


async def measure(python: str, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="progtc-bench-") as home:
        kernelspec(Path(home) / "share", "bench", python)
        served = await jupyter_server(Path(home)).start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                remote = await stack.enter_async_context(
                    ToolKernel(
                        [echo],
                        kernel=RemoteKernel(served.server(), kernel_name="bench"),
                        timeout=Timeout(TIMEOUT, tool_call=TIMEOUT),
                    )
                )
                local = await stack.enter_async_context(
                    ToolKernel(
                        [echo],
                        kernel=LocalKernel(python=python),
                        timeout=Timeout(TIMEOUT, tool_call=TIMEOUT),
                    )
                )
                ToolBridge.calls_on_stdin = False  # this one's calls stay on iopub
                try:
                    on_iopub = await stack.enter_async_context(
                        ToolKernel(
                            [echo],
                            kernel=RemoteKernel(served.server(), kernel_name="bench"),
                            timeout=Timeout(TIMEOUT, tool_call=TIMEOUT),
                        )
                    )
                finally:
                    ToolBridge.calls_on_stdin = True
                info = remote.bridge.kernel_info
                out["kernel"] = dict(info) if info else {}
                out["framing"] = getattr(remote.bridge.transport, "framing", None)

                log("1: websocket: awaited call vs input() on the same websocket")
                out["ws"] = await calls_and_inputs(remote, lambda n: input_rounds_over(remote, n))
                out["ws_iopub"] = await calls_and_inputs(
                    on_iopub, lambda n: input_rounds_over(on_iopub, n)
                )
                out["routes"] = await run_cell(remote, ROUTES_CELL)
                out["routes_iopub"] = await run_cell(on_iopub, ROUTES_CELL)

                log("2: local ZMQ: awaited call vs input() from a second client")
                kc = await plain_client(local.kernel_manager, iopub=False, stdin=True)
                try:
                    out["zmq"] = await calls_and_inputs(local, lambda n: run_input_cell(kc, n))
                finally:
                    kc.stop_channels()

                log(f"3: {GATHERED} gathered calls over the websocket")
                await run_cell(remote, GATHER_CELL.format(n=200))  # warm-up
                runs = []
                for _ in range(GATHER_REPEATS):
                    result = await remote.execute(GATHER_CELL.format(n=GATHERED))
                    lines = result.stdout.strip().splitlines()
                    runs.append(
                        json.loads(lines[-1])
                        if result.ok and lines
                        else {"seconds": float("nan"), "answered": 0}
                    )
                out["gather"] = runs
        except Exception:
            print(f"the server's log ends with:\n{served.log_text()}", file=sys.stderr)
            raise
        finally:
            served.stop()
    return out


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    ms = 1000.0
    ws, zmq = raw["ws"], raw["zmq"]
    seconds = statistics.median(run["seconds"] for run in raw["gather"])
    lost = max(GATHERED - run["answered"] for run in raw["gather"])
    rows = [
        {
            "name": "ws call / ws input()",
            "ratio": ws["call"]["median"] / ws["input"]["median"],
            "goal": ("<=", 1.2),
            "detail": f"call {ws['call']['median'] * ms:.3f} ms, input() "
            f"{ws['input']['median'] * ms:.3f} ms over the same websocket",
        },
        {
            "name": "  the same, calls on iopub",
            "ratio": raw["ws_iopub"]["call"]["median"] / raw["ws_iopub"]["input"]["median"],
            "goal": None,
            "detail": f"call {raw['ws_iopub']['call']['median'] * ms:.3f} ms, input() "
            f"{raw['ws_iopub']['input']['median'] * ms:.3f} ms; routes taken: "
            f"{raw['routes']} vs {raw['routes_iopub']}",
        },
        {
            "name": "ws call / ZMQ call",
            "ratio": ws["call"]["median"] / zmq["call"]["median"],
            "goal": None,
            "detail": f"floor: ws input() / ZMQ input() = "
            f"{ws['input']['median'] / zmq['input']['median']:.2f} "
            f"(ZMQ call {zmq['call']['median'] * ms:.3f} ms, input() "
            f"{zmq['input']['median'] * ms:.3f} ms)",
        },
        {
            "name": f"{GATHERED} gathered over ws: lost",
            "ratio": float(lost),
            "goal": ("<=", 0.0),
            "detail": f"{GATHERED / seconds:,.0f} calls/s (median of {GATHER_REPEATS}); "
            "the server's default iopub rate limit applies",
        },
    ]
    return judged(rows)


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(__doc__, argv)
    began = time.perf_counter()
    # The server starts kernels from its own folder: give it an absolute path.
    python = os.path.abspath(shutil.which(args.python) or args.python)
    raw = asyncio.run(measure(python, log))
    rows = summarize(raw)
    report = {
        "python": args.python,
        "kernel": raw["kernel"],
        "framing": raw["framing"],
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "duration_s": time.perf_counter() - began,
        "results": rows,
        "raw": raw,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"kernel: {args.python} (ipykernel {raw['kernel'].get('ipykernel')}); "
            f"websocket framing {raw['framing']}; run {report['duration_s']:.1f} s"
        )
        print_rows(rows)
    return 0 if all(row["pass"] for row in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
