"""Leasing pool kernels: the REST side of ``AsyncProgtcClient``.

    POST   /progtc-kernel/api/kernels          {"session": null | "name"} -> 201 lease
    DELETE /progtc-kernel/api/kernels/ID       end a lease (its kernel is reaped)
    DELETE /progtc-kernel/api/sessions/NAME    end a persistent session
    GET    /progtc-kernel/api/status           version, pool, ceilings

A lease is ``{"id": kernel_id, "session": ..., "extension_loaded": true, "limits":
{...}}``; the client then talks to ``/api/kernels/ID/channels`` like any Jupyter
client. Authenticated as the rest of the server: the token (the API key) as
``Authorization: token KEY``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..exceptions import PoolError, PoolExhausted

PREFIX = "/progtc-kernel/api"


class AuthenticatedFirst(APIHandler):
    """Jupyter's API handler, whose XSRF check (which skips token-authenticated
    requests) waits for a caller: one nobody authenticated is refused for that, saying
    so, not for a missing XSRF cookie it could never have had."""

    def check_xsrf_cookie(self) -> None:
        if getattr(self, "_jupyter_current_user", None) is not None:
            super().check_xsrf_cookie()


class _Handler(AuthenticatedFirst):
    @property
    def service(self) -> Any:
        return self.settings["progtc_kernel"]


class LeaseHandler(_Handler):
    @web.authenticated
    async def post(self) -> None:
        session = self._session_from_body()
        try:
            lease = await self.service.pool.take(session=session)
        except PoolExhausted as exc:
            raise web.HTTPError(503, str(exc)) from None
        except PoolError as exc:
            raise web.HTTPError(500, str(exc)) from None
        self.set_status(201)
        self.finish(
            json.dumps(
                {
                    "id": lease.kernel_id,
                    "session": lease.session,
                    "extension_loaded": True,  # pool kernels are warmed with it
                    "limits": asdict(self.service.limits),
                }
            )
        )

    def _session_from_body(self) -> str | None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(
                400,
                'the body is not JSON: send {"session": null}, or '
                '{"session": "a name"} for a persistent session',
            ) from None
        if not isinstance(body, dict) or set(body) - {"session"}:
            unknown = sorted(set(body) - {"session"}) if isinstance(body, dict) else body
            raise web.HTTPError(422, f"unknown field(s) {unknown}: the only field is 'session'")
        session = body.get("session")
        if session is not None and (not isinstance(session, str) or not session):
            raise web.HTTPError(422, "'session' is a non-empty string, or null")
        return session


class KernelLeaseHandler(_Handler):
    @web.authenticated
    async def delete(self, kernel_id: str) -> None:
        if kernel_id not in self.service.pool.leases:
            raise web.HTTPError(404, f"no lease of kernel {kernel_id}")
        self.service.pool.release(kernel_id)
        self.set_status(204)
        self.finish()


class SessionHandler(_Handler):
    @web.authenticated
    async def delete(self, name: str) -> None:
        kernel_id = self.service.pool.sessions.get(name)
        if kernel_id is None:
            raise web.HTTPError(404, f"no session named {name!r}")
        self.service.pool.release(kernel_id)
        self.set_status(204)
        self.finish()


class StatusHandler(_Handler):
    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps(self.service.status()))


def routes() -> list[tuple[str, type]]:
    return [
        (f"{PREFIX}/kernels", LeaseHandler),
        (rf"{PREFIX}/kernels/(?P<kernel_id>[\w-]+)", KernelLeaseHandler),
        (rf"{PREFIX}/sessions/(?P<name>[^/]+)", SessionHandler),
        (f"{PREFIX}/status", StatusHandler),
    ]
