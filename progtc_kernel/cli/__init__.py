"""The ``progtc-kernel`` command, one module per subcommand.

    progtc-kernel run SCRIPT --tools MODULE_OR_FILE   run code in a kernel that serves tools
    progtc-kernel serve --api-key KEY                 progtc's server on a warm kernel pool
    progtc-kernel mcp --tools MODULE_OR_FILE          the agent toolset as an MCP server
    progtc-kernel notebook IN OUT --tools M           run a notebook whose cells call tools
    progtc-kernel install                             install the "Python 3 (progtc)" kernelspec
    progtc-kernel attach --existing FILE --tools M    serve tools to a running kernel (a notebook's)

Each module has ``add_parser(commands)``, which sets the ``handler`` its command runs.
Every command takes ``--log-level`` (default: warning). Exit status: 0 on success, 1
when the work failed, 2 for usage errors: a mistake in what the user gave (options,
files, a --tools module) is said in one line naming the fix, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from .._version import __version__
from . import attach, install, mcp, notebook, run, serve
from ._common import PROG, console, error_text, usage_error

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

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
    configure_logging(args.log_level)
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        console().print(error_text("interrupted"))
        return 130
    except SystemExit:
        raise
    except BaseException as exc:
        return _failed(args, exc)
    return status


def _failed(args: argparse.Namespace, exc: BaseException) -> int:
    """The exit status for what a command raised, said in one line: 2 for the user's
    mistakes; 1, with the traceback at --log-level debug, for anything else."""
    mistake = usage_error(exc)
    if mistake is not None:
        console().print(error_text(mistake))
        return 2
    logging.getLogger("progtc_kernel").debug("%s failed", args.command, exc_info=exc)
    hint = "" if args.log_level == "debug" else " (--log-level debug shows the traceback)"
    console().print(
        error_text(
            f"{args.command} failed: {''.join(traceback.format_exception_only(exc)).strip()}{hint}"
        )
    )
    return 1


def configure_logging(level: str) -> None:
    """Log records of every library at ``level`` and above to stderr (stdout is the
    code's, or MCP's)."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Programmatic tool calling on Jupyter kernels."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    for subcommand in commands.choices.values():
        subcommand.add_argument(
            "--log-level",
            choices=LOG_LEVELS,
            default="warning",
            type=str.lower,
            help="log records at this level and above to stderr (default: warning); the "
            "package's loggers are progtc_kernel, progtc_kernel.server, progtc_kernel.tools",
        )
    return parser
