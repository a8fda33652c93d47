"""``progtc-kernel run``: a script in a kernel that serves tools, with a live trace.

The code's stdout goes to stdout and everything else (its stderr, the tool-call trace,
errors) to stderr, so its output can be piped. Exit status: 0 when the code ran, 1 when
it failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import reprlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..timeouts import Timeout
from ._common import (
    CLI_TOKEN,
    TerminalApprover,
    UsageError,
    add_approve_option,
    add_timeout_options,
    approval_policy,
    console,
    load_tools,
    timeout_from,
)

if TYPE_CHECKING:
    from rich.console import Console

    from ..host.events import Event
    from ..host.results import ExecutionResult, Output
    from ..host.tool_kernel import ToolKernel
    from ..host.tools import ToolRegistry
    from ._common import Subcommands


def add_parser(commands: Subcommands) -> None:
    run = commands.add_parser(
        "run",
        help="run a script in a kernel whose `tools` module calls your functions",
        description="Run SCRIPT in a fresh IPython kernel where `from tools import ...` "
        "calls the functions of the --tools modules or files. The code's stdout goes to "
        "stdout; its stderr, a trace of tool calls and errors go to stderr. Exit status: "
        "0 when the code ran, 1 when it failed, 2 for usage errors.",
    )
    run.add_argument("script", metavar="SCRIPT", help="the Python file to run ('-' reads stdin)")
    run.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="a module name or .py file with the tools: its TOOLS list or dict, else the "
        "names in __all__, else its public functions (repeat to combine)",
    )
    add_approve_option(run)
    add_timeout_options(
        run,
        Timeout(),
        kinds=("run", "tool_call", "start", "request", "approval"),
        helps={"request": "fail an HTTP request to --server after S seconds"},
        deprecated={"tool_call": ["--tool-timeout"]},
    )
    run.add_argument(
        "--python",
        metavar="PATH",
        help="the kernel's interpreter; it needs only ipykernel (default: this one)",
    )
    remote = run.add_argument_group(
        "a kernel on a Jupyter Server, Kernel Gateway or Enterprise Gateway"
    )
    remote.add_argument(
        "--server",
        metavar="URL",
        help="run on that server: a kernel is started there and shut "
        "down after, or the one given by --kernel-id is used",
    )
    remote.add_argument(
        "--token",
        metavar="T",
        default=os.environ.get("JUPYTER_TOKEN"),
        help="the server's token (default: $JUPYTER_TOKEN)",
    )
    remote.add_argument(
        "--kernel-id", metavar="ID", help="a running kernel on the server, left running after"
    )
    remote.add_argument(
        "--kernel-name", metavar="NAME", help="the kernelspec to start (here or on the server)"
    )
    run.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    code = _read_script(args.script)
    tools = load_tools(args.tools)
    args.requires_approval = approval_policy(args.tools, args.approve, list(tools))
    return asyncio.run(_run(code, tools, args))


def _read_script(script: str) -> str:
    if script == "-":
        return sys.stdin.read()
    path = Path(script)
    if path.is_dir():
        raise UsageError(f"{script} is a directory; give the Python file to run")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"script not found: {script} (give a file path, or '-' to read the code from stdin)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {script}: {exc}") from None


async def _run(code: str, tools: ToolRegistry, args: argparse.Namespace) -> int:
    from ..exceptions import KernelError
    from ..host.tool_kernel import ToolKernel
    from ..kernels.jupyter_server import JupyterServer
    from ..kernels.resolve import described_kernel

    timeout = timeout_from(args)
    problem = _remote_usage(args)
    if problem:
        raise UsageError(problem)
    try:
        server = (
            JupyterServer(
                args.server,
                token=args.token,
                token_option=CLI_TOKEN,
                request_timeout=timeout.request,
                start_timeout=timeout.start,
            )
            if args.server
            else None
        )
    except ValueError as exc:
        raise UsageError(f"--server: {exc}") from None
    approver = TerminalApprover(console(), "progtc-kernel run")
    kernel = ToolKernel(
        tools,
        kernel=described_kernel(
            python=args.python,
            kernel_name=args.kernel_name,
            server=server,
            kernel_id=args.kernel_id,
        ),
        timeout=timeout,
        approve=approver if args.requires_approval else None,
        requires_approval=args.requires_approval,
    )
    try:
        await kernel.start()
    except KernelError as exc:
        where = (
            f" on {args.server}"
            if args.server
            else f" with --python {args.python}"
            if args.python
            else ""
        )
        raise UsageError(f"could not start a kernel{where}: {exc}") from None
    try:
        return await _stream(kernel, code, timeout=timeout.run)
    finally:
        approver.close()


def _remote_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of kernel options, if anything."""
    if args.kernel_id and not args.server:
        return "--kernel-id names a kernel on a server: give --server URL too"
    if args.server and args.python:
        return (
            "--python picks a local interpreter; a kernel on --server runs one of the "
            "server's kernelspecs: pick it with --kernel-name"
        )
    if args.kernel_id and args.kernel_name:
        return "--kernel-name starts a kernel and --kernel-id uses a running one: give one"
    return None


async def _stream(kernel: ToolKernel, code: str, *, timeout: float | None) -> int:
    printer = Printer(console(), timeout=timeout)
    try:
        # stream() is an async generator; aclosing() interrupts the run on Ctrl-C at once.
        events = kernel.stream(code)
        async with contextlib.aclosing(events):
            async for event in events:
                printer.show(event)
    finally:
        await kernel.close()
    return printer.status


class Printer:
    """Shows a run's events as they arrive; ``status`` is the exit status."""

    def __init__(self, console: Console, *, timeout: float | None) -> None:
        self.console = console
        self.timeout = timeout
        self.status = 0
        self.mid_line = False  # the code's last output did not end its line
        self.symbols = _symbols(console)
        self.repr = reprlib.Repr()
        self.repr.maxstring = self.repr.maxother = 60

    def show(self, event: Event) -> None:
        from ..host.events import (
            DisplayOutput,
            ExecutionFinished,
            StreamOutput,
            ToolCallFinished,
            ToolCallStarted,
        )

        if isinstance(event, StreamOutput):
            self._write(sys.stdout if event.name == "stdout" else sys.stderr, event.text)
        elif isinstance(event, DisplayOutput):
            self._display(event.output)
        elif isinstance(event, ToolCallStarted):
            arguments = ", ".join(
                f"{name}={self.repr.repr(value)}" for name, value in event.arguments.items()
            )
            self._trace((f"{self.symbols[0]} ", "cyan"), (event.name, "bold"), f"({arguments})")
        elif isinstance(event, ToolCallFinished):
            call = event.call
            if call.ok:
                self._trace(
                    (f"{self.symbols[1]} ", "green"),
                    call.name,
                    (f" {_duration(call.duration)}", "dim"),
                )
            else:
                self._trace(
                    (f"{self.symbols[2]} ", "red"), call.name, (f" {call.error or 'failed'}", "red")
                )
        elif isinstance(event, ExecutionFinished):
            self._finish(event.result)

    def _write(self, stream: Any, text: str) -> None:
        if text:
            stream.write(text)
            stream.flush()
            self.mid_line = not text.endswith("\n")

    def _trace(self, *parts: str | tuple[str, str]) -> None:
        from rich.text import Text

        sys.stdout.flush()
        if self.mid_line:  # keep the trace off the end of the code's last line
            self.console.print()
            self.mid_line = False
        self.console.print(Text.assemble(*parts))

    def _display(self, output: Output) -> None:
        text, note = describe_output(output.data)
        if text is not None:
            if "text/markdown" in output.data and sys.stdout.isatty():
                from rich.console import Console
                from rich.markdown import Markdown

                Console(soft_wrap=False).print(Markdown(text))
                self.mid_line = False
            else:
                self._write(sys.stdout, text if text.endswith("\n") else text + "\n")
        elif note is not None:
            self._trace((note, "dim"))

    def _finish(self, result: ExecutionResult) -> None:
        from rich.text import Text

        calls = len(result.tool_calls)
        failed = sum(not call.ok for call in result.tool_calls)
        summary = f"{_duration(result.duration)}, {calls} tool call{'s' * (calls != 1)}"
        summary += f" ({failed} failed)" if failed else ""
        error = result.error
        if error is None:
            self._trace((f"done in {summary}", "dim"))
            return
        self.status = 1
        sys.stdout.flush()
        if self.mid_line:
            self.console.print()
        if error.traceback:
            self.console.print(Text(error.traceback))
        if error.kind == "timeout":
            after = f" after {self.timeout:g} s" if self.timeout else ""
            self.console.print(
                Text.assemble(
                    (f"timed out{after}: ", "bold red"),
                    f"{error.evalue}; give it longer with --timeout S, or --timeout none "
                    "for no limit",
                )
            )
        elif error.traceback:  # it ends with the error itself
            self.console.print(Text.assemble(("failed", "bold red"), (f" after {summary}", "dim")))
        else:
            self.console.print(
                Text.assemble(
                    ("failed: ", "bold red"),
                    f"{error.ename}: {error.evalue}",
                    (f" after {summary}", "dim"),
                )
            )


def describe_output(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """How to show a mime bundle in a terminal: ``(text for stdout, note for stderr)``.

    Markdown and meaningful ``text/plain`` are shown as text; anything else becomes a
    note such as ``[image/png, 12.3 kB]``.
    """
    if isinstance(data.get("text/markdown"), str):
        return data["text/markdown"], None
    plain = data.get("text/plain")
    richer = [mime for mime in data if mime != "text/plain"]
    if isinstance(plain, str) and not (richer and _is_placeholder(plain)):
        return plain, None
    if not richer:
        return None, None
    mime = next((m for m in richer if m.startswith("image/")), richer[0])
    return None, f"[{mime}, {_size(mime, data[mime])}]"


def _is_placeholder(plain: str) -> bool:
    """``<IPython.core.display.HTML object>``, ``<Figure size 640x480 with 1 Axes>``..."""
    plain = plain.strip()
    return plain.startswith("<") and plain.endswith(">") and "\n" not in plain


def _size(mime: str, value: Any) -> str:
    if not isinstance(value, str):
        count = len(json.dumps(value).encode())
    elif mime.startswith(("image/", "audio/", "video/", "application/pdf")) and "svg" not in mime:
        encoded = "".join(value.split())  # base64: 3 bytes per 4 characters
        count = len(encoded) * 3 // 4 - encoded[-2:].count("=")
    else:
        count = len(value.encode())
    if count < 1000:
        return f"{count} B"
    return f"{count / 1000:.1f} kB" if count < 1_000_000 else f"{count / 1_000_000:.1f} MB"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _symbols(console: Console) -> tuple[str, str, str]:
    fancy = ("→", "✓", "✗")
    try:
        "".join(fancy).encode(console.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ("->", "ok", "x")
    return fancy
