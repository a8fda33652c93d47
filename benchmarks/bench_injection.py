"""What bringing the kernel side along costs: attach to first tool call, injected / installed.

    python benchmarks/bench_injection.py [--python PYTHON] [--bare-python PYTHON] [--json]

Each sample starts a plain kernel (no extension) and waits until it answers (not
timed), then times one
``ToolKernel(kernel=km)``: from ``start()`` (the extension-loading request, the comm,
the kernel's confirmation) to the answer of a first awaited tool call. On
``--python`` (ipykernel and this checkout installed) the kernel loads its own copy;
on ``--bare-python`` (ipykernel alone) the host's kernel-side code travels in the request
and is compiled there. By default both are built alike (uv, else venv + pip), from the
same ipykernel release, so that they differ only in that. Samples alternate between
the two; each kernel is fresh, so nothing is cached in the kernel.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import bare_kernel_manager, command_line, judged, plain_client, print_rows

from progtc_kernel import Timeout, ToolKernel
from progtc_kernel.host.injection import load_expression

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 9  # each side
FIRST_CALL = "import tools\nprint(await tools.echo(1))"


async def echo(x: Any) -> Any:
    """Return the argument."""
    return x


def environment(requirements: list[str], log: Any) -> str:
    """An interpreter with these requirements, in a throw-away environment."""
    folder = Path(tempfile.mkdtemp(prefix="progtc-bench-env-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    log(f"building an environment with {' '.join(requirements)}")
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    python = folder / "bin" / "python"
    if uv:
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(folder)], check=True)
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(python), *requirements], check=True
        )
    else:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    return str(python)


async def attach_to_first_call(python: str, cwd: str) -> tuple[float, bool]:
    """Seconds from attaching to a fresh plain kernel to its first tool call's answer,
    and whether the kernel side was injected."""
    km = bare_kernel_manager(python)
    await km.start_kernel(cwd=cwd)  # outside any checkout: nothing importable from cwd
    try:
        waiter = await plain_client(km, iopub=True, stdin=False)  # up: its start is not timed
        waiter.stop_channels()
        started = time.perf_counter()
        async with ToolKernel([echo], kernel=km, timeout=Timeout(start=120)) as kernel:
            result = await kernel.execute(FIRST_CALL)
            elapsed = time.perf_counter() - started
            assert result.stdout == "1\n", result
            assert kernel.bridge.kernel_info is not None
            return elapsed, kernel.bridge.kernel_info["injected"]
    finally:
        await km.shutdown_kernel(now=True)


async def measure(python: str, bare: str, log: Any) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"installed": [], "injected": []}
    with tempfile.TemporaryDirectory(prefix="progtc-bench-cwd-") as cwd:
        for i in range(SAMPLES + 1):
            log(f"sample {i}/{SAMPLES}")
            for side, interpreter in (("installed", python), ("injected", bare)):
                elapsed, injected = await attach_to_first_call(interpreter, cwd)
                if injected != (side == "injected"):
                    raise RuntimeError(f"{interpreter}: expected the kernel side {side}")
                if i:  # the first round warms the host's caches (the cell is built once)
                    samples[side].append(elapsed)
    return {
        "installed_s": statistics.median(samples["installed"]),
        "injected_s": statistics.median(samples["injected"]),
        "load_bytes": len(load_expression(inject=True).encode()),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    args, log = command_line(
        __doc__,
        argv,
        extra=[("--bare-python", "an interpreter with ipykernel alone (default: build one)")],
        python_default=None,
    )
    ipykernel = "ipykernel==" + version("ipykernel")  # the same release on both sides
    python = args.python or environment([ipykernel, "-e", str(ROOT)], log)
    bare = args.bare_python or environment([ipykernel], log)
    raw = asyncio.run(measure(python, bare, log))
    rows = judged(
        [
            {
                "name": "attach to first tool call, injected / installed",
                "ratio": raw["injected_s"] / raw["installed_s"],
                "goal": None,
                "detail": (
                    f"{raw['injected_s'] * 1000:.0f} ms vs {raw['installed_s'] * 1000:.0f} ms"
                    f" (median of {SAMPLES}); the load request carries"
                    f" {raw['load_bytes'] / 1024:.0f} KiB"
                ),
            }
        ]
    )
    if args.json:
        print(json.dumps({"results": rows, "raw": raw}, indent=2))
    else:
        print_rows(rows)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
