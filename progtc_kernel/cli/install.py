"""``progtc-kernel install``: the "Python 3 (progtc)" kernelspec."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ._common import UsageError

if TYPE_CHECKING:
    from ._common import Subcommands


def add_parser(commands: Subcommands) -> None:
    install = commands.add_parser(
        "install",
        help="install a Jupyter kernelspec that loads progtc_kernel",
        description="Install the kernelspec of a kernel on this interpreter with "
        "--ext=progtc_kernel, so that hosts can serve it tools with ToolBridge.",
    )
    where = install.add_mutually_exclusive_group()
    where.add_argument(
        "--user", action="store_true", help="install for the current user (the default)"
    )
    where.add_argument(
        "--sys-prefix", action="store_true", help=f"install into this environment ({sys.prefix})"
    )
    where.add_argument("--prefix", metavar="P", help="install under P/share/jupyter/kernels")
    install.add_argument("--name", default="progtc", help="the kernel name (default: progtc)")
    install.add_argument(
        "--display-name",
        default="Python 3 (progtc)",
        help="the name shown in Jupyter (default: 'Python 3 (progtc)')",
    )
    install.add_argument(
        "--fork-server",
        action="store_true",
        help="start its kernels by forking a template process that has imported "
        "ipykernel already: a tenth of the CPU and half the memory per kernel (Linux; "
        "elsewhere kernels are spawned as usual)",
    )
    install.add_argument(
        "--preload",
        metavar="MODULES",
        help="with --fork-server: modules the template imports for every kernel, "
        "comma-separated (e.g. numpy,pandas)",
    )
    install.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    from ..kernelspec import install_kernelspec

    prefix = sys.prefix if args.sys_prefix else args.prefix
    if args.preload and not args.fork_server:
        raise UsageError("--preload applies to the fork server: add --fork-server")
    provisioner = None
    if args.fork_server:
        from ..kernels.fork_server import fork_server_metadata

        provisioner = fork_server_metadata(preload_list(args.preload))
    try:
        path = install_kernelspec(
            user=prefix is None,
            prefix=prefix,
            name=args.name,
            display_name=args.display_name,
            provisioner=provisioner,
        )
    except PermissionError as exc:
        raise UsageError(f"cannot write the kernelspec ({exc}); try --user or --prefix") from None
    except OSError as exc:  # --prefix names a file, a path that cannot be made...
        raise UsageError(
            f"cannot write the kernelspec ({exc}); give --prefix a directory "
            "you can write to, or use --user"
        ) from None
    print(f"Installed kernelspec {args.name!r} ({args.display_name}) in {path}")
    return 0


def preload_list(text: str | None) -> list[str]:
    """``--preload numpy,pandas`` as module names; a name that is none says so."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise UsageError(f"--preload {name!r} is not a module name (e.g. numpy,pandas)")
    return names
