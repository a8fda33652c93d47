"""Where the Jupyter Server inside an E2B sandbox is, and the headers it wants."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def sandbox_address(
    sandbox: Any, port: int, headers: Mapping[str, str] | None
) -> tuple[str, dict[str, str]]:
    """Where the Jupyter Server in an E2B sandbox is, and the headers it wants.

    Args:
        sandbox: an E2B ``Sandbox`` or ``AsyncSandbox``.
        port: the server's port in the sandbox.
        headers: headers to send besides.

    Returns:
        The server's URL, and ``headers`` with the sandbox's
        ``E2B-Traffic-Access-Token`` where its public traffic is off.
    """
    headers = dict(headers or {})
    traffic_token = getattr(sandbox, "traffic_access_token", None)
    if traffic_token:
        headers["E2B-Traffic-Access-Token"] = str(traffic_token)
    host = str(sandbox.get_host(port))
    scheme = "http" if host.startswith("localhost") else "https"  # E2B's debug mode
    return f"{scheme}://{host}", headers
