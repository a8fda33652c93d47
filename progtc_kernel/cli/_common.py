"""What the commands share: usage errors, durations on the command line, the console."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    from rich.console import Console
    from rich.text import Text

    # What each command module's add_parser() is given: the parser's subcommands.
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

PROG = "progtc-kernel"


class UsageError(Exception):
    """A problem with the command line or its inputs: exit status 2, no traceback."""


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
