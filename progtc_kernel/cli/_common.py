"""What the commands share: usage errors, the timeout options, the console, loading
--tools, and --approve (which tools need a person's approval, asked at the terminal)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    from rich.console import Console
    from rich.text import Text

    from ..approval import Approval, ApprovalRequest
    from ..host.tools import ToolRegistry
    from ..timeouts import Timeout

    # What each command module's add_parser() is given: the parser's subcommands.
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

PROG = "progtc-kernel"
# The fix a server that refuses the token names, in this command line's words.
CLI_TOKEN = "--token T (or set $JUPYTER_TOKEN)"


class UsageError(Exception):
    """A problem with the command line or its inputs: exit status 2, no traceback."""


def usage_error(exc: BaseException) -> str | None:
    """What to tell the user when ``exc`` is their mistake (exit status 2); None when
    it is not."""
    from ..exceptions import ToolDefinitionError

    if isinstance(exc, (UsageError, ToolDefinitionError)):
        return str(exc)
    return None


def load_tools(sources: Sequence[str]) -> ToolRegistry:
    """The tools of ``--tools``; a module that fails or exits while it is imported is
    a usage error that names where."""
    from ..exceptions import ToolDefinitionError
    from ..host.loading import load_tools

    try:
        return load_tools(sources)
    except ToolDefinitionError as exc:
        raise UsageError(str(exc)) from None
    except SystemExit as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
        raise UsageError(
            f"a --tools module raised SystemExit({exc.code!r}) while it was imported{where}: "
            "a tools module must not exit when imported; put such code under "
            '`if __name__ == "__main__":`'
        ) from None


def seconds(text: str) -> float | None:
    """A timeout on the command line: seconds above 0, or ``none`` for no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds: give seconds above 0, or none for no limit"
        ) from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a number of seconds above 0, or none for no limit"
        )
    return value


class _DeprecatedSpelling(argparse.Action):
    """An option's old name: works, with a warning that names the new one."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{PROG}: warning: {option_string} is deprecated: use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


# What each kind of timeout is called on the command line, and what it stops.
_OPTIONS = {
    "run": ("--timeout", "interrupt the code after S seconds"),
    "tool_call": ("--tool-call-timeout", "fail a tool call after S seconds"),
    "start": ("--start-timeout", "give up when the kernel has not started within S seconds"),
    "request": ("--request-timeout", "fail an HTTP request to the server after S seconds"),
    "approval": ("--approval-timeout", "deny a call that waits S seconds for approval"),
}


def add_timeout_options(
    parser: argparse.ArgumentParser,
    defaults: Timeout,
    *,
    kinds: Sequence[str] = ("run", "tool_call", "start"),
    helps: Mapping[str, str] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
    deprecated: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Add the command's timeout options, one per kind of ``Timeout`` field; read
    them back with ``timeout_from``.

    Args:
        parser: the command's parser.
        defaults: the command's defaults (each field's, shown in the help).
        kinds: the ``Timeout`` fields the command has options for.
        helps: what an option stops, where the command's words differ.
        aliases: more names of an option (progtc's ``--code-execution-timeout``).
        deprecated: old names of an option; they work and warn.
    """
    group = parser.add_argument_group("timeouts (seconds; none: no limit)")
    for kind in kinds:
        flag, what = _OPTIONS[kind]
        what = (helps or {}).get(kind, what)
        default = getattr(defaults, kind)
        shown = "none" if default is None else f"{default:g}"
        names = [flag, *(aliases or {}).get(kind, ())]
        group.add_argument(
            *names,
            type=seconds,
            default=default,
            dest=f"{kind}_timeout",
            metavar="S",
            help=f"{what} (default: {shown})",
        )
        for old in (deprecated or {}).get(kind, ()):
            group.add_argument(
                old,
                type=seconds,
                dest=f"{kind}_timeout",
                metavar="S",
                action=_DeprecatedSpelling,
                new=flag,
                help=argparse.SUPPRESS,
            )


def timeout_from(args: argparse.Namespace, defaults: Timeout | None = None) -> Timeout:
    """The ``Timeout`` that the options of ``add_timeout_options`` give."""
    from ..timeouts import Timeout

    base = defaults or Timeout()
    return Timeout(
        getattr(args, "run_timeout", base.run),
        tool_call=getattr(args, "tool_call_timeout", base.tool_call),
        start=getattr(args, "start_timeout", base.start),
        request=getattr(args, "request_timeout", base.request),
        approval=getattr(args, "approval_timeout", base.approval),
    )


def console() -> Console:
    """Where commands talk to the person: stderr, so that stdout stays the code's."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def error_text(message: str) -> Text:
    from rich.text import Text

    return Text.assemble((f"{PROG}: error: ", "bold red"), message)


# -- --approve: which calls need approval, and a person who gives it at the terminal ---

# How a person answers at the prompt.
ALLOW = ("y", "yes", "allow")
ALLOW_FOR_RUN = ("a", "all", "always", "allow for this run")
DENY = ("n", "no", "deny")
NO_TERMINAL_FIX = "run it in a terminal, or drop --approve"


def add_approve_option(parser: argparse.ArgumentParser) -> None:
    """``--approve TOOL`` (repeatable): those tools run only once a person allows each
    call at the terminal."""
    parser.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="TOOL",
        help="ask at the terminal before each call of TOOL runs: allow, deny (with a "
        "reason) or allow for the rest of the run (repeatable; a --tools module may also "
        "set REQUIRES_APPROVAL = {names} or a function (tool, arguments) -> bool)",
    )


def approval_policy(
    sources: Sequence[str], approve: Sequence[str], tools: Sequence[str]
) -> Collection[str] | Callable[[str, dict[str, Any]], bool] | None:
    """Which calls need approval: the ``--approve`` names (each one of ``tools``) and
    the ``--tools`` modules' ``REQUIRES_APPROVAL``; None when nothing does."""
    from ..exceptions import ToolDefinitionError
    from ..host.loading import approval_policy, with_approved_names

    try:
        return with_approved_names(approve, approval_policy(sources), tools)
    except ToolDefinitionError as exc:
        raise UsageError(str(exc)) from None


class TerminalApprover:
    """Asks the person at the terminal whether a call may run: allow, deny (with a
    reason), or allow for the rest of the run. Calls waiting together (a ``gather``)
    are asked one after another. Without a terminal (stdin is not a TTY) every call
    is denied, and stderr says so with the fix.

    Args:
        out: Where the questions go (stderr; stdout stays the code's).
        command: The command's name, for the messages (``progtc-kernel run``).
    """

    def __init__(self, out: Console, command: str) -> None:
        self.out = out
        self.command = command
        self._turn = asyncio.Lock()  # one question on the screen at a time
        self._waiting = 0
        self._lines: _TerminalLines | None = None

    async def __call__(self, request: ApprovalRequest) -> Approval:
        from ..approval import Approval

        if not sys.stdin.isatty():
            why = (
                f"{self.command} could not ask for approval of {request.tool}: there is no "
                f"terminal (stdin is not a TTY); {NO_TERMINAL_FIX}"
            )
            self.out.print(error_text(f"denied {request.tool}: {why}"))
            return Approval.deny(why)
        self._waiting += 1
        queued = True
        try:
            async with self._turn:
                await asyncio.sleep(0)  # one loop turn: the rest of a batch queues up behind
                self._waiting -= 1
                queued = False
                # (Calls of a tool allowed for the run meanwhile are let through by the
                # kernel: their questions are cancelled here, unasked.)
                return await self._ask(request)
        finally:
            if queued:  # cancelled before its turn
                self._waiting -= 1

    async def _ask(self, request: ApprovalRequest) -> Approval:
        from rich.text import Text

        from ..approval import Approval

        self.out.print(Text.assemble(("? ", "bold yellow"), *describe_call(request)))
        if self._waiting:
            self.out.print(Text(f"  ({self._waiting} more waiting after this one)", "dim"))
        question = (
            "  allow? [y]es / [n]o (n REASON to say why) / [a]llow for the rest of this run: "
        )
        lines = self._lines = self._lines or _TerminalLines()
        while True:
            self.out.print(question, end="", markup=False)
            try:
                line = await lines.readline()
            except asyncio.CancelledError:
                self.out.print()
                self.out.print(Text("  no longer waiting: the call was cancelled", "dim"))
                raise
            if line is None:  # end of input (Ctrl-D)
                self.out.print()
                return Approval.deny(f"no answer at the terminal for {request.tool}")
            approval = parse_answer(line, request.tool)
            if approval is not None:
                return approval
            self.out.print(
                "  answer y (allow), n or n REASON (deny), or a (allow for this run)",
                markup=False,
            )

    def close(self) -> None:
        """Stop watching the terminal."""
        if self._lines is not None:
            self._lines.close()


def describe_call(request: ApprovalRequest) -> list[str | tuple[str, str]]:
    """A call waiting for approval, in full (a person decides on what they see):
    ``send_email(to='bob@example.com', body='...')`` and why it asks."""
    arguments = ", ".join(f"{name}={value!r}" for name, value in request.arguments.items())
    return [
        (request.tool, "bold"),
        f"({arguments})",
        ("  needs your approval", "dim"),
    ]


def parse_answer(line: str, tool: str) -> Approval | None:
    """The decision a line typed at the prompt gives; None for no decision."""
    from ..approval import Approval

    answer = line.strip()
    word, _, rest = answer.partition(" ")
    word = word.rstrip(":").lower()
    if answer.lower() in ALLOW:
        return Approval.allow()
    if answer.lower() in ALLOW_FOR_RUN:
        return Approval.allow_for_run()
    if word in DENY:
        reason = rest.strip().lstrip(":").strip()
        return Approval.deny(reason or f"{tool} was denied at the terminal")
    return None


class _TerminalLines:
    """Lines typed on stdin, read without blocking the event loop (and without a
    thread, so that a question no longer needed can be abandoned at once)."""

    def __init__(self) -> None:
        self._fd = sys.stdin.fileno()
        self._buffer = b""
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
        except OSError:  # the terminal went away
            chunk = b""
        if not chunk:
            self._ended = True
            self._loop.remove_reader(self._fd)
        self._buffer += chunk
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def readline(self) -> str | None:
        """The next line typed, without its newline; None at the end of input."""
        while b"\n" not in self._buffer:
            if self._ended:
                rest, self._buffer = self._buffer, b""
                return rest.decode(errors="replace") if rest else None
            self._waiter = self._loop.create_future()
            await self._waiter
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def close(self) -> None:
        if not self._ended:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)
