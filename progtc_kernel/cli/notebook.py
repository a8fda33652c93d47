"""``progtc-kernel notebook``: run a notebook whose cells call host tools.

    progtc-kernel notebook IN.ipynb OUT.ipynb --tools tools.py -p city Oslo

The executed notebook is written to OUT, also when a cell fails (the error is in
that cell, and later cells are not run). A progress bar over the code cells, the
tool calls served and any error go to stderr. Exit status: 0 when every cell ran,
1 when one failed (a tool call that raised, a timeout, a dead kernel), 2 for usage
errors (a missing notebook, bad tools or parameters, a kernel that cannot start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..timeouts import NOTEBOOK_TIMEOUT
from ._common import UsageError, add_timeout_options, console, load_tools, timeout_from

if TYPE_CHECKING:
    from nbformat import NotebookNode
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from ..host.threads import LoopThread
    from ..integrations.nbclient import NotebookExecutionError, ToolNotebookClient
    from ._common import Subcommands


def add_parser(commands: Subcommands) -> None:
    notebook = commands.add_parser(
        "notebook",
        help="run a notebook whose cells call your tools",
        description="Run the notebook IN on a fresh kernel where `from tools import ...` "
        "calls the functions of the --tools modules or files, and write the executed "
        "notebook to OUT (also when a cell fails). Exit status: 0 when every cell ran, 1 "
        "when one failed, 2 for usage errors.",
    )
    notebook.add_argument("input", metavar="IN", help="the notebook to run (.ipynb)")
    notebook.add_argument("output", metavar="OUT", help="where to write the executed notebook")
    notebook.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="a module name or .py file with the tools: its TOOLS list or dict, else the "
        "names in __all__, else its public functions (repeat to combine)",
    )
    notebook.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter as papermill does: in a cell after the one tagged "
        "'parameters'. VALUE is read as papermill reads it: True, False, None, integers "
        "and floats become those; JSON lists and objects ([...], {...}) too; anything "
        "else is a string (repeat for more)",
    )
    notebook.add_argument(
        "-r",
        "--raw-parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter to VALUE as a string, as it is",
    )
    add_timeout_options(
        notebook,
        NOTEBOOK_TIMEOUT,
        helps={"run": "interrupt a cell after S seconds"},
        deprecated={"tool_call": ["--tool-timeout"]},
    )
    kernel = notebook.add_mutually_exclusive_group()
    kernel.add_argument(
        "--python", metavar="PATH", help="the kernel's interpreter; it needs only ipykernel"
    )
    kernel.add_argument(
        "--kernel-name", metavar="NAME", help="the kernelspec to start (default: the notebook's)"
    )
    notebook.add_argument(
        "--cwd", metavar="DIR", help="the kernel's working directory (default: IN's folder)"
    )
    notebook.add_argument(
        "--allow-errors",
        action="store_true",
        help="run every cell even after one fails (the exit status is still 1)",
    )
    notebook.set_defaults(handler=command)


def parameter_value(text: str) -> Any:
    """A ``-p`` value, read as papermill reads it (plus JSON lists and objects)."""
    constants = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def command(args: argparse.Namespace) -> int:
    try:
        from ..integrations.nbclient import (
            ToolNotebookClient,
            inject_parameters,
            nbclient_timeouts,
        )
    except ImportError as exc:
        raise UsageError(str(exc)) from None

    limits = timeout_from(args, NOTEBOOK_TIMEOUT)
    nb = _read(args.input)
    tools = load_tools(args.tools)
    parameters = {name: parameter_value(value) for name, value in args.parameter}
    parameters.update(dict(args.raw_parameter))
    try:
        if parameters:
            inject_parameters(nb, parameters)
        cwd = Path(args.cwd or Path(args.input).resolve().parent)
        if not cwd.is_dir():
            raise ValueError(f"--cwd {args.cwd}: no such folder")
        client = ToolNotebookClient(
            nb,
            tools=tools,
            tool_call_timeout=limits.tool_call,
            python=args.python,
            kernel_name=args.kernel_name or "",
            allow_errors=args.allow_errors,
            **nbclient_timeouts(limits),
            resources={"metadata": {"path": os.fspath(cwd)}},
        )
        client.timeout_option = "--timeout S"
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _Run(client, Path(args.output), console()).run()


def _read(path: str) -> NotebookNode:
    import nbformat

    try:
        nb: NotebookNode = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except FileNotFoundError:
        raise UsageError(f"notebook not found: {path}") from None
    # Not JSON, or JSON that is not a notebook (nbformat's reader then fails anywhere).
    except (
        OSError,
        ValueError,
        AttributeError,
        KeyError,
        TypeError,
        nbformat.ValidationError,
    ) as exc:
        problem = exc.message if isinstance(exc, nbformat.ValidationError) else exc
        raise UsageError(
            f"cannot read {path} as a notebook ({problem}): give a Jupyter "
            "notebook (.ipynb, nbformat 4)"
        ) from None
    return nb


class _Run:
    """Runs the client's notebook with a progress bar; writes it out; says how it went."""

    def __init__(self, client: ToolNotebookClient, output: Path, console: Console) -> None:
        self.client = client
        self.output = output
        self.console = console
        self.started = False  # a cell has run: the kernel came up
        self.interrupted = False
        self.loop_thread: LoopThread | None = None
        self.cells = [
            i
            for i, cell in enumerate(client.nb.cells)
            if cell.cell_type == "code" and cell.source.strip()
        ]

    def run(self) -> int:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from ..integrations.nbclient import NotebookExecutionError

        began = time.perf_counter()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("cells, tool calls: {task.fields[calls]}"),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            task = progress.add_task("starting the kernel", total=len(self.cells), calls=0)
            self._follow(progress, task)
            try:
                self._execute()
                failure = None
            except NotebookExecutionError as exc:
                failure = exc
            except Exception as exc:
                if self.started:
                    raise
                raise UsageError(f"could not start a kernel: {exc}") from None
        self._write()
        status = self._report(failure, time.perf_counter() - began)
        if self.interrupted:
            raise KeyboardInterrupt  # the notebook is written: exit as interrupted
        return status

    def _execute(self) -> None:
        """Run the notebook on a loop thread of its own, so that Ctrl-C reaches this
        one (nbclient takes SIGINT for itself on the main thread) and interrupts the
        running cell, as Jupyter's interrupt button does; the run stops there."""
        from ..host.threads import LoopThread

        self.loop_thread = LoopThread("progtc-kernel-notebook")
        running = self.loop_thread.submit(self.client.async_execute())
        try:
            running.result()  # waits, yet a Ctrl-C comes through
        except KeyboardInterrupt:
            self.interrupted = True
            self._interrupt_kernel()
            running.result()  # a second Ctrl-C leaves at once; the kernel exits with us
        finally:
            if running.done():
                self.loop_thread.stop(timeout=10)

    def _interrupt_kernel(self) -> None:
        from jupyter_core.utils import ensure_async

        km = self.client.km
        if km is None or self.loop_thread is None or self.loop_thread.closed:
            return
        with contextlib.suppress(Exception):  # not started, or already gone: nothing to stop
            self.loop_thread.submit(ensure_async(km.interrupt_kernel())).result(timeout=10)

    def _follow(self, progress: Progress, task: TaskID) -> None:
        """Move the bar on as cells start and finish (nbclient's hooks)."""
        client = self.client

        def on_cell_start(cell: Any, cell_index: int, **_: Any) -> None:
            if cell_index in self.cells:
                self.started = True
                number = self.cells.index(cell_index) + 1
                progress.update(task, description=f"cell {number}/{len(self.cells)}")

        def on_cell_executed(cell: Any, cell_index: int, **_: Any) -> None:
            progress.update(task, advance=1, calls=len(client.tool_calls))

        client.on_cell_start = on_cell_start
        client.on_cell_executed = on_cell_executed

    def _write(self) -> None:
        import nbformat

        try:
            nbformat.write(self.client.nb, self.output)
        except OSError as exc:
            raise UsageError(f"cannot write {self.output}: {exc}") from None

    def _report(self, failure: NotebookExecutionError | None, duration: float) -> int:
        from rich.text import Text

        calls = self.client.tool_calls
        failed_calls = sum(not call.ok for call in calls)
        summary = (
            f"{len(calls)} tool call{'s' * (len(calls) != 1)}"
            + (f" ({failed_calls} failed)" if failed_calls else "")
            + f" in {duration:.2f} s; wrote {self.output}"
        )
        errors = [
            (i, output)
            for i, cell in enumerate(self.client.nb.cells)
            for output in cell.get("outputs", [])
            if output.output_type == "error"
        ]
        if failure is None and not errors:
            self.console.print(Text(f"ran {len(self.cells)} cells, {summary}", style="dim"))
            return 0
        for index, error in errors:
            where = self.cells.index(index) + 1 if index in self.cells else index + 1
            self.console.print(
                Text.assemble(
                    (f"cell {where} failed: ", "bold red"),
                    Text.from_ansi("\n".join(error.traceback)),
                )
            )
        if failure is not None and not errors:  # nothing in the notebook says why
            self.console.print(
                Text.assemble(("failed: ", "bold red"), f"{failure.ename}: {failure.evalue}")
            )
        self.console.print(Text(f"failed: {summary}", style="bold red"))
        return 1
