"""What a user gives as a kernel, turned into the lifecycle that drives it.

The one module on the host's side that knows the concrete kernels: ``ToolKernel``
and everything built on it know a kernel only through ``base.py``'s interfaces and
``resolve_kernel``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .base import KernelLifecycle, KernelLike
from .jupyter_server import JupyterServer, RemoteKernel
from .local import AttachedKernel, LocalKernel


def resolve_kernel(kernel: KernelLike | None) -> KernelLifecycle:
    """The lifecycle of the kernel given (see ``KernelLike``).

    ``None`` is a local kernel of one's own on this interpreter. A lifecycle is used
    as it is. A manager running a kernel, or holding a running kernel's connection
    info, is attached to; an idle manager is started here (and so owned). A client,
    a connection file or an info dict is attached to.

    Args:
        kernel: What the user gave as ``kernel=``.

    Returns:
        The lifecycle that starts (or attaches to) that kernel.

    Raises:
        TypeError: ``kernel`` is none of those; the message names what to give.
    """
    if kernel is None:
        return LocalKernel()
    if isinstance(kernel, KernelLifecycle):
        return kernel
    if isinstance(kernel, (str, os.PathLike, dict)):
        return AttachedKernel(kernel)
    if isinstance(kernel, JupyterServer):
        raise TypeError(
            "a JupyterServer is where kernels run, not a kernel: give "
            "kernel=RemoteKernel(server) to start one there, or "
            "kernel=RemoteKernel(server, kernel_id=...) to attach to a running one"
        )
    from jupyter_client.client import KernelClient
    from jupyter_client.manager import KernelManager

    if isinstance(kernel, KernelManager):
        if kernel.has_kernel:
            return AttachedKernel(dict(kernel.get_connection_info()), manager=kernel)
        if kernel.shell_port:  # loaded from a running kernel's connection file
            return AttachedKernel(dict(kernel.get_connection_info()))
        return LocalKernel(manager=kernel)
    if isinstance(kernel, KernelClient):
        return AttachedKernel(dict(kernel.get_connection_info()))
    raise TypeError(
        f"{type(kernel).__name__} is not a kernel; give kernel= a LocalKernel(...) or "
        "RemoteKernel(...) (progtc_kernel.kernels), a jupyter_client KernelManager or "
        "KernelClient, or a running kernel's connection file or info dict"
    )


# The options ToolKernel took before a kernel was one argument, and where each went.
_MOVED = {
    "python": "LocalKernel",
    "kernel_name": "LocalKernel",
    "cwd": "LocalKernel",
    "env": "LocalKernel",
    "server": "RemoteKernel",
    "kernel_id": "RemoteKernel",
    "kernel_manager": "kernel",
}


def moved_options(owner: str, given: object, options: Mapping[str, object]) -> TypeError:
    """The error for options ``owner`` (``"ToolKernel"``...) no longer takes, naming
    the fix: each describes a kernel, and belongs to the kernel's own class.

    Args:
        owner: The class the options were given to.
        given: What was given as ``kernel=`` (``None``: nothing).
        options: The options it does not take, by name.

    Returns:
        The ``TypeError`` to raise.
    """
    names = ", ".join(f"{name}=" for name in options)
    unknown = [name for name in options if name not in _MOVED]
    if unknown:
        return TypeError(f"{owner}() got unexpected keyword arguments: {names}")
    if "kernel_manager" in options:
        return TypeError(f"{owner}(kernel_manager=km) is now {owner}(kernel=km)")
    if "kernel_id" in options and "server" not in options:
        return TypeError(
            "kernel_id= names a kernel on a Jupyter Server: give "
            "kernel=RemoteKernel(server=JupyterServer(url, token=...), kernel_id=...)"
        )
    if any(_MOVED[name] == "RemoteKernel" for name in options):
        problem = (
            f"{names} {'describes' if len(options) == 1 else 'describe'} a kernel on a "
            "Jupyter Server: give "
            "kernel=RemoteKernel(server, kernel_id=..., kernel_name=..., env=...)"
        )
    else:
        problem = (
            f"python=, kernel_name=, cwd= and env= describe a kernel for {owner} to "
            "start: give kernel=LocalKernel(python=..., kernel_name=..., cwd=..., env=...)"
        )
    if given is not None:
        problem += "; they cannot apply to the kernel given"
    return TypeError(f"{problem} (from progtc_kernel.kernels)")


def described_kernel(
    *,
    python: str | None = None,
    kernel_name: str | None = None,
    server: JupyterServer | None = None,
    kernel_id: str | None = None,
) -> KernelLifecycle:
    """The kernel command-line options describe: one to start here (``python``,
    ``kernel_name``), or on ``server`` (``kernel_name``), or the running one
    ``kernel_id`` there.

    Args:
        python: The interpreter of a local kernel.
        kernel_name: The kernelspec to start, here or on ``server``.
        server: The Jupyter Server to run the kernel on.
        kernel_id: A running kernel on ``server``, attached to.

    Returns:
        The lifecycle of that kernel.

    Raises:
        TypeError: The options cannot go together; the message says why.
    """
    if server is not None:
        if python is not None:
            raise TypeError("python= starts a local kernel; it cannot apply to one on a server")
        return RemoteKernel(server, kernel_id, kernel_name=kernel_name)
    if kernel_id is not None:
        raise TypeError(
            "kernel_id= names a kernel on a Jupyter Server: give the server too "
            "(server=JupyterServer(url, token=...))"
        )
    return LocalKernel(python=python, kernel_name=kernel_name)
