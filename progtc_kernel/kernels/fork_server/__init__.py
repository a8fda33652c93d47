"""Kernels forked from a template process that has imported them already.

A kernel start costs about 0.4 CPU-s, nearly all of it importing ipykernel, IPython,
zmq and tornado. The fork server pays that once per interpreter: a template process
imports them (and the user's preloads, e.g. numpy) and forks one child per kernel,
which then starts the kernel app on the connection file its manager wrote.

* ``ForkServerProvisioner``: the jupyter_client kernel provisioner (entry point
  ``progtc-fork-server``), for any ``KernelManager`` through a kernelspec.
* ``fork_server_spec``: a kernelspec that uses it.
* ``stop_templates``: stop this process's templates (and their kernels) now; they
  stop by themselves when this process ends.

Linux only: elsewhere the provisioner spawns kernels as ``LocalProvisioner`` does.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .process import kernels_forked, running_templates, stop_templates, template_for
    from .provisioner import ForkServerProvisioner

#: The provisioner's entry point name, for a kernelspec's ``kernel_provisioner``.
PROVISIONER_NAME = "progtc-fork-server"
# Imported on first use: a host that never forks does not import jupyter_client here.
_LAZY = {
    "ForkServerProvisioner": ".provisioner",
    "kernels_forked": ".process",
    "running_templates": ".process",
    "stop_templates": ".process",
    "template_for": ".process",
}

__all__ = [
    "PROVISIONER_NAME",
    "ForkServerProvisioner",
    "fork_server_default",
    "fork_server_metadata",
    "kernels_forked",
    "running_templates",
    "stop_templates",
    "template_for",
]


#: Set to ``1`` to fork the kernels of ``LocalKernel`` (and ``serve``) by default.
ENVIRONMENT_SWITCH = "PROGTC_KERNEL_FORK_SERVER"


def fork_server_default() -> bool:
    """Whether kernels are forked when nobody said: ``$PROGTC_KERNEL_FORK_SERVER``."""
    return os.environ.get(ENVIRONMENT_SWITCH, "") == "1"


def fork_server_metadata(preload: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A kernelspec's ``metadata["kernel_provisioner"]`` that names the fork server.

    Args:
        preload: Modules the template imports for every kernel, e.g. ``["numpy"]``.

    Returns:
        The stanza to put under the kernelspec's ``metadata``.
    """
    return {"provisioner_name": PROVISIONER_NAME, "config": {"preload": list(preload)}}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
