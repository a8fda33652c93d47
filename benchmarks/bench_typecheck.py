"""Scripts checked before they run: false positives, errors caught, and the time a check
takes (``ProgrammaticToolset(check_types=True)``, with ty).

    python benchmarks/bench_typecheck.py [--runs 3] [--mypy N] [--json]

1. False positives: findings in the good corpus (``tests/typecheck_corpus/good.py``,
   scripts that run correctly on a real kernel; ``tests/test_typecheck.py`` runs each)
   (goal 0).
2. Errors caught: bad scripts (``bad.py``) with a finding on their marked line.
3. Check time per script: ``ScriptChecker.check`` end to end (the stubs and the script
   written to a temporary folder, ty run as a process, its output read), the median
   over the corpus; the median of ``--runs`` runs (goal <= 50 ms).
4. For comparison (``--mypy N``): mypy on the first N good scripts with the same stubs,
   its time per script and false positives. pyright is not measured: it needs node.

No kernel is started: the checker needs none. The load average is printed with the
figures (the machine is shared).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from progtc_kernel._stubs import stubs_source  # noqa: E402
from progtc_kernel.host.tools import ToolRegistry  # noqa: E402
from progtc_kernel.toolset.typecheck import (  # noqa: E402
    _HEADER,
    ScriptChecker,
    _awaitable_calls_marked,
)
from tests.typecheck_corpus.bad import BAD  # noqa: E402
from tests.typecheck_corpus.corpus_tools import TOOLS  # noqa: E402
from tests.typecheck_corpus.good import GOOD  # noqa: E402

SPECS = ToolRegistry.of(TOOLS).specs()
TOOL_NAMES = {spec["name"] for spec in SPECS}
MYPY = [sys.executable, "-m", "mypy", "--no-incremental", "--ignore-missing-imports"]


def error_line(script: str) -> int:
    return next(n for n, line in enumerate(script.splitlines(), 1) if "# error" in line)


def children_cpu() -> float:
    """CPU seconds the processes this one waited for have used (ty's, here)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def one_run(checker: ScriptChecker) -> dict[str, Any]:
    """Every script checked once: the false positives, the catches, the times (wall
    clock, and the checker's CPU time, which a busy machine inflates less)."""
    times: list[float] = []
    cpu: list[float] = []
    false_positives: dict[str, list[str]] = {}
    missed: list[str] = []
    for name, script in [*GOOD.items(), *BAD.items()]:
        started, cpu_before = time.perf_counter(), children_cpu()
        findings = await checker.check(script, SPECS)
        times.append(time.perf_counter() - started)
        cpu.append(children_cpu() - cpu_before)
        if name in GOOD and findings:
            false_positives[name] = [f"line {f.line}: {f.message}" for f in findings]
        if name in BAD and error_line(script) not in [f.line for f in findings]:
            missed.append(name)
    return {
        "false_positives": false_positives,
        "missed": missed,
        "median_ms": statistics.median(times) * 1000,
        "cpu_median_ms": statistics.median(cpu) * 1000,
        "max_ms": max(times) * 1000,
    }


def mypy_on(names: list[str]) -> dict[str, Any]:
    """mypy (strict off, as a model's script is) on these good scripts, one process
    each, as the checker runs ty."""
    times, false_positives = [], {}
    stubs = _HEADER + stubs_source(SPECS)
    for name in names:
        script = GOOD[name]
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            (root / "tools").mkdir()
            (root / "tools" / "__init__.pyi").write_text(stubs)
            checked = _awaitable_calls_marked(script, ast.parse(script), TOOL_NAMES)
            (root / "script.py").write_text(checked)
            started = time.perf_counter()
            done = subprocess.run(
                [*MYPY, "--no-error-summary", "script.py"],
                cwd=folder,
                capture_output=True,
                text=True,
                env={**os.environ, "MYPYPATH": folder},
            )
            times.append(time.perf_counter() - started)
            errors = [line for line in done.stdout.splitlines() if ": error:" in line]
            if errors:
                false_positives[name] = errors
    return {"median_ms": statistics.median(times) * 1000, "false_positives": false_positives}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mypy", type=int, default=0, metavar="N")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    checker = ScriptChecker()
    version = subprocess.run([checker.binary, "--version"], capture_output=True, text=True)
    load = os.getloadavg()
    runs = [await one_run(checker) for _ in range(options.runs)]
    median_ms = statistics.median(run["median_ms"] for run in runs)
    report: dict[str, Any] = {
        "checker": version.stdout.strip(),
        "load_average": [round(x, 2) for x in load],
        "good_scripts": len(GOOD),
        "bad_scripts": len(BAD),
        "false_positives": max(len(run["false_positives"]) for run in runs),
        "false_positive_findings": runs[0]["false_positives"],
        "caught": len(BAD) - max(len(run["missed"]) for run in runs),
        "missed": runs[0]["missed"],
        "check_ms_median_of_runs": round(median_ms, 1),
        "check_ms_each_run": [round(run["median_ms"], 1) for run in runs],
        "check_ms_slowest": round(max(run["max_ms"] for run in runs), 1),
        "checker_cpu_ms_median_of_runs": round(
            statistics.median(run["cpu_median_ms"] for run in runs), 1
        ),
    }
    if options.mypy:
        report["mypy"] = mypy_on(sorted(GOOD)[: options.mypy])
    if options.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['checker']}; load average {report['load_average']}")
        print(
            f"1. false positives: {report['false_positives']} of {len(GOOD)} good scripts (goal 0)"
        )
        print(f"2. errors caught:   {report['caught']} of {len(BAD)} bad scripts")
        print(
            f"3. check time:      median {report['check_ms_median_of_runs']} ms per script "
            f"(runs: {report['check_ms_each_run']}; slowest {report['check_ms_slowest']} ms) "
            "(goal <= 50 ms)"
        )
        print(f"   the checker's CPU time: median {report['checker_cpu_ms_median_of_runs']} ms")
        if "mypy" in report:
            mypy = report["mypy"]
            print(
                f"4. mypy, {options.mypy} scripts: median {mypy['median_ms']:.0f} ms per "
                f"script, {len(mypy['false_positives'])} with findings"
            )
    good = report["false_positives"] == 0 and median_ms <= 50
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
