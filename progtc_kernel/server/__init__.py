"""``progtc-kernel serve``: a Jupyter Server with a warm kernel pool and progtc's HTTP API.

Needs the ``server`` extra: ``pip install 'progtc-kernel[server]'``.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import ProgtcKernelApp

    return [{"module": "progtc_kernel.server.app", "app": ProgtcKernelApp}]
