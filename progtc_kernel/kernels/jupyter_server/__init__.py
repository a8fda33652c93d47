"""Kernels on a Jupyter Server, a Kernel Gateway or an Enterprise Gateway.

* ``rest.py``: ``JupyterServer``, where a server is and how to authenticate (a
  token, extra headers such as E2B's traffic token), and its REST API, with errors
  that name the fix.
* ``lifecycle.py``: ``RemoteKernel``, a kernel's lifecycle through REST
  (``/api/kernels``): started here and owned (shut down on close), or attached to
  by id and left running.
* ``websocket.py``: ``WebsocketTransport``, one connection to the kernel websocket
  (``/api/kernels/{id}/channels``) with a session id of its own, which reconnects
  after a drop so that the server replays what it buffered meanwhile.
* ``frames.py``: the websocket's two framings of a Jupyter message.
* ``e2b.py``: where the server inside an E2B sandbox is.
"""

from __future__ import annotations

from .lifecycle import RemoteKernel
from .rest import JupyterServer
from .websocket import WebsocketTransport

__all__ = ["JupyterServer", "RemoteKernel", "WebsocketTransport"]
