"""What the commands share: usage errors, durations on the command line, the console,
loading --tools."""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    from rich.console import Console
    from rich.text import Text

    from ..host.tools import ToolRegistry

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
    """A ``--timeout``-style value: seconds, where 0 means no limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError("give a positive number of seconds, or 0 for no limit")
    return value or None


def console() -> Console:
    """Where commands talk to the person: stderr, so that stdout stays the code's."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def error_text(message: str) -> Text:
    from rich.text import Text

    return Text.assemble((f"{PROG}: error: ", "bold red"), message)
