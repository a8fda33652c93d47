"""Leasing pool kernels: the REST side of ``AsyncProgtcClient``.

    POST   /progtc-kernel/api/kernels          {"session": null | "name"} -> 201 lease
    GET    /progtc-kernel/api/lease-requests/R  a lease request still waiting -> 200 lease
    DELETE /progtc-kernel/api/lease-requests/R  give up waiting
    DELETE /progtc-kernel/api/kernels/ID       end a lease (its kernel is reaped)
    DELETE /progtc-kernel/api/sessions/NAME    end a persistent session
    GET    /progtc-kernel/api/status           version, pool, ceilings

A lease is ``{"id": kernel_id, "session": ..., "extension_loaded": true, "limits":
{...}}``; the client then talks to ``/api/kernels/ID/channels`` like any Jupyter
client. Authenticated as the rest of the server: the token (the API key) as
``Authorization: token KEY``.

A lease request waits for a kernel to come free (up to the server's pool timeout;
then 503). A client whose HTTP timeout is shorter than that wait asks to be answered
asynchronously (RFC 7240), ``Prefer: respond-async, wait=2``: when no kernel comes
free within ``wait`` seconds, the answer is ``202 {"pending": R}`` with a
``Location`` to ask again (a GET, answered within ``wait`` too), keeping the
request's place in the queue. A request nobody asks about for ``ABANDONED_AFTER``
seconds is given up. Without the header, the POST waits and answers once, as it
always has.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..exceptions import PoolError, PoolExhausted
from .pool import Lease

PREFIX = "/progtc-kernel/api"
# How long one ask of a ``Prefer: respond-async`` request waits for a kernel: the
# client's ``wait=``, at most MAX_ASK_WAIT; LEASE_ASK_WAIT when it gives none.
LEASE_ASK_WAIT = 2.0
MAX_ASK_WAIT = 10.0
# A waiting request nobody has asked about for this long is given up: its client left
# (an ask follows the previous answer at once).
ABANDONED_AFTER = 30.0


@dataclass
class WaitingLease:
    """A lease request still waiting for a kernel, between its client's asks."""

    taking: asyncio.Task[Lease]
    session: str | None
    asking: int = 0  # asks being answered now
    asked_at: float = field(default_factory=time.monotonic)  # when the last one ended


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


class _LeaseAnswers(_Handler):
    def _waiting(self, request_id: str) -> WaitingLease:
        waiting: WaitingLease | None = self.service.lease_requests.get(request_id)
        if waiting is None:
            raise web.HTTPError(404, f"no lease request {request_id} is waiting")
        return waiting

    async def _answer(self, request_id: str, wait: float) -> None:
        """The lease, once the request has one; else 202 within ``wait`` seconds."""
        waiting = self._waiting(request_id)
        waiting.asking += 1
        try:
            await asyncio.wait({waiting.taking}, timeout=wait)
        finally:
            waiting.asking -= 1
            waiting.asked_at = time.monotonic()
        if self.service.lease_requests.get(request_id) is not waiting:
            raise web.HTTPError(404, f"lease request {request_id} was given up")
        if not waiting.taking.done():
            self.service.lease_asks_pending += 1
            asyncio.get_running_loop().call_later(
                ABANDONED_AFTER, _give_up_if_abandoned, self.service, request_id
            )
            self.set_status(202)
            again = f"{self.base_url.rstrip('/')}{PREFIX}/lease-requests/{request_id}"
            self.set_header("Location", again)
            self.set_header("Preference-Applied", "respond-async")
            self.finish(json.dumps({"pending": request_id}))
            return
        self.service.lease_requests.pop(request_id, None)
        self._leased(await _lease_of(waiting.taking))

    def _leased(self, lease: Lease) -> None:
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


class LeaseHandler(_LeaseAnswers):
    @web.authenticated
    async def post(self) -> None:
        session = self._session_from_body()
        preferences = _preferences(self.request.headers.get("Prefer", ""))
        if "respond-async" in preferences:
            wait = _ask_wait(preferences)
            request_id = uuid.uuid4().hex
            taking = asyncio.ensure_future(self.service.pool.take(session=session))
            self.service.lease_requests[request_id] = WaitingLease(taking, session)
            self.set_status(201)  # (once leased; 202 while it waits)
            await self._answer(request_id, wait)
            return
        self.set_status(201)
        self._leased(await _lease_of(self.service.pool.take(session=session)))

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


class LeaseRequestHandler(_LeaseAnswers):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        preferences = _preferences(self.request.headers.get("Prefer", ""))
        await self._answer(request_id, _ask_wait(preferences))

    @web.authenticated
    def delete(self, request_id: str) -> None:
        self._waiting(request_id)
        _give_up(self.service, request_id)
        self.set_status(204)
        self.finish()


async def _lease_of(taking: Any) -> Lease:
    """What taking a kernel gave, or the HTTP error saying why there is none."""
    try:
        lease: Lease = await taking
    except PoolExhausted as exc:
        raise web.HTTPError(503, str(exc)) from None
    except PoolError as exc:
        raise web.HTTPError(500, str(exc)) from None
    return lease


def _give_up_if_abandoned(service: Any, request_id: str) -> None:
    waiting = service.lease_requests.get(request_id)
    if (
        waiting is not None
        and not waiting.asking
        and time.monotonic() - waiting.asked_at >= ABANDONED_AFTER
    ):
        _give_up(service, request_id)


def _give_up(service: Any, request_id: str) -> None:
    """Stop waiting for a kernel; one leased meanwhile that nobody got is reaped (a
    session's is left to its idle timeout: it may have been the session's already)."""
    waiting = service.lease_requests.pop(request_id)
    taking = waiting.taking
    if not taking.done():
        taking.cancel()
    elif not taking.cancelled() and taking.exception() is None and waiting.session is None:
        service.pool.release(taking.result().kernel_id)


def _preferences(header: str) -> dict[str, str]:
    """An RFC 7240 ``Prefer`` header's preferences: ``{"respond-async": "", "wait": "2"}``."""
    preferences = {}
    for part in header.split(","):
        name, _, value = part.split(";")[0].strip().partition("=")
        if name:
            preferences[name.lower()] = value.strip().strip('"')
    return preferences


def _ask_wait(preferences: dict[str, str]) -> float:
    try:
        wait = float(preferences.get("wait", LEASE_ASK_WAIT))
    except ValueError:
        raise web.HTTPError(
            400, "Prefer: wait= takes seconds, as in 'Prefer: respond-async, wait=2'"
        ) from None
    return min(max(wait, 0.0), MAX_ASK_WAIT)


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
        (rf"{PREFIX}/lease-requests/(?P<request_id>\w+)", LeaseRequestHandler),
        (rf"{PREFIX}/sessions/(?P<name>[^/]+)", SessionHandler),
        (f"{PREFIX}/status", StatusHandler),
    ]
