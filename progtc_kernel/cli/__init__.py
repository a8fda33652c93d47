"""The ``progtc-kernel`` command, one module per subcommand.

    progtc-kernel run SCRIPT --tools MODULE_OR_FILE   run code in a kernel that serves tools
    progtc-kernel serve --api-key KEY                 progtc's server on a warm kernel pool
    progtc-kernel mcp --tools MODULE_OR_FILE          the agent toolset as an MCP server
    progtc-kernel notebook IN OUT --tools M           run a notebook whose cells call tools
    progtc-kernel install                             install the "Python 3 (progtc)" kernelspec
    progtc-kernel attach --existing FILE --tools M    serve tools to a running kernel (a notebook's)

Each module has ``add_parser(commands)``, which sets the ``handler`` its command runs.
Exit status: 0 on success, 1 when the work failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from . import attach, install, mcp, notebook, run, serve
from ._common import PROG, UsageError, console, error_text

__all__ = ["main"]

COMMANDS = (run, serve, mcp, notebook, install, attach)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``progtc-kernel`` command; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status: int = args.handler(args)
    except UsageError as exc:
        console().print(error_text(str(exc)))
        return 2
    except KeyboardInterrupt:
        console().print(error_text("interrupted"))
        return 130
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Programmatic tool calling on Jupyter kernels.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser
