"""Install a Jupyter kernelspec whose kernels load progtc_kernel at startup.

Pick "Python 3 (progtc)" in Jupyter (or start the kernel by name) and a host can
serve tools to it with ``ToolBridge`` without loading the extension first.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any


def kernel_argv(python: str | None = None) -> list[str]:
    """The command line of a progtc kernel on ``python`` (default: this interpreter)."""
    return [
        python or sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
        "--ext=progtc_kernel",
    ]


def install_kernelspec(
    *,
    user: bool = True,
    prefix: str | None = None,
    name: str = "progtc",
    display_name: str = "Python 3 (progtc)",
    provisioner: dict[str, Any] | None = None,
) -> str:
    """Install the kernelspec for this interpreter; return the directory it went to.

    ``prefix`` (e.g. ``sys.prefix``) installs under ``PREFIX/share/jupyter/kernels``
    and wins over ``user``; ``user=False`` without a prefix installs system-wide.
    ``provisioner``: a ``kernel_provisioner`` stanza for its metadata (e.g. the fork
    server's, ``fork_server_metadata()``).
    """
    from jupyter_client.kernelspec import KernelSpecManager

    spec: dict[str, Any] = {
        "argv": kernel_argv(),
        "display_name": display_name,
        "language": "python",
    }
    if provisioner is not None:
        spec["metadata"] = {"kernel_provisioner": provisioner}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / name
        source.mkdir()
        with contextlib.suppress(Exception):  # logos are a nicety
            from ipykernel.kernelspec import RESOURCES

            for logo in Path(RESOURCES).glob("logo-*"):
                shutil.copy(logo, source)
        (source / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
        destination: str = KernelSpecManager().install_kernel_spec(
            str(source), kernel_name=name, user=user and prefix is None, prefix=prefix
        )
    return destination
