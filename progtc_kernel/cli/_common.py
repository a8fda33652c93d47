"""What the commands share: usage errors, the timeout options, the console, loading
--tools."""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    from rich.console import Console
    from rich.text import Text

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
    )


def console() -> Console:
    """Where commands talk to the person: stderr, so that stdout stays the code's."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def error_text(message: str) -> Text:
    from rich.text import Text

    return Text.assemble((f"{PROG}: error: ", "bold red"), message)
