"""Where the Jupyter Server inside an E2B sandbox is, and the headers it wants."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def sandbox_address(
    sandbox: Any, port: int, headers: Mapping[str, str] | None
) -> tuple[str, dict[str, str]]:
    """The server's URL in ``sandbox`` (sync or async E2B ``Sandbox``) and the headers
    to send: ``headers`` and, where the sandbox's public traffic is off, its
    ``E2B-Traffic-Access-Token``."""
    headers = dict(headers or {})
    traffic_token = getattr(sandbox, "traffic_access_token", None)
    if traffic_token:
        headers["E2B-Traffic-Access-Token"] = str(traffic_token)
    host = str(sandbox.get_host(port))
    scheme = "http" if host.startswith("localhost") else "https"  # E2B's debug mode
    return f"{scheme}://{host}", headers
