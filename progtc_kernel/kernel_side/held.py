"""Resumable runs: tool calls that outlive the host that started their run.

A host marks a run resumable in its ``execute_request``'s metadata
(``protocol.HoldBody``). When that host goes (its connection closed, or it said
``close``), the run's calls it never started wait here, and so do calls the run
makes meanwhile, for up to the run's grace period. The next host that registers
is told which runs it takes over (``ReadyBody.held_runs``) and is sent the calls of
the tools it serves. A call the host may have been running is not sent again: it
fails (see ``KernelBridge.close``), so nothing runs twice. When the grace period
passes with the calls still unserved they fail as any call of a gone host does.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from ..exceptions import HostDisconnectedError
from ..protocol import HOLD_METADATA, RUN_METADATA, body_problem
from . import _ipykernel
from .bridge import KernelBridge, PendingCall


class Hold:
    """One resumable run: its grace period, the host session that runs it, and since
    when it has waited for a host (None: a host serves it)."""

    __slots__ = ("grace", "run", "session", "timer", "waiting_since")

    def __init__(self, run: str, grace: float, session: str | None) -> None:
        self.run = run
        self.grace = grace
        self.session = session
        self.waiting_since: float | None = None
        self.timer: asyncio.TimerHandle | None = None


class HeldRuns(KernelBridge):
    """The holds of resumable runs, and their calls that no host serves now.

    It is a bridge without a host: code of a held run calls tools through it while
    no attached host serves them (``Extension.hosts`` offers it then), and its calls
    wait, never sent, until ``hand_over`` gives them to a host that serves them.
    """

    def __init__(self, kernel: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(kernel, "", b"", None, shell_replies=None, loop=loop)
        self.holds: dict[str, Hold] = {}

    # -- the runs, as they start and end (IPython's pre/post_execute) -----------------

    def run_starts(self, parent: dict[str, Any]) -> None:
        grace = grace_of(parent)
        if grace is not None:
            header = parent.get("header", {})
            with self._lock:
                self.holds[str(header.get("msg_id"))] = Hold(
                    str(header.get("msg_id")), grace, header.get("session")
                )

    def run_ends(self, parent: dict[str, Any]) -> None:
        run = run_of(parent)
        with self._lock:
            hold = self.holds.pop(run, None)
        if hold is not None:
            self._fail(hold, "the run ended before a host served this call")

    def current_run_held(self) -> bool:
        return bool(self.holds) and run_of(_ipykernel.parent_header(self.kernel)) in self.holds

    def holds_call(self, call: PendingCall) -> bool:
        return run_of(call.parent) in self.holds

    # -- hosts going and coming -------------------------------------------------------

    def host_leaves(self, host: KernelBridge) -> None:
        """``host`` goes: the runs it served wait for a host from now on, and their
        code can still name its tools."""
        with self._lock:
            self.tools = {**self.tools, **host.tools}
            orphaned = [hold for hold in self.holds.values() if hold.session == host.host_session]
        self._wait_for_host(orphaned)

    def keep(self, calls: list[PendingCall]) -> None:
        """Keep these calls of held runs (their host went, never having started them)
        until a host serves them."""
        with self._lock:
            for call in calls:
                call.owner, call.deadline, call.queued = self, None, False
                self._waiting.append(call)
            runs = {run_of(call.parent) for call in calls}
            holds = [hold for run in runs if (hold := self.holds.get(run)) is not None]
        self._deadlines_set(calls)  # a blocking call's wait no longer ends at a deadline
        self._wait_for_host(holds)

    def _wait_for_host(self, holds: list[Hold]) -> None:
        """These runs wait for a host from now, if they did not already."""
        now = time.monotonic()
        with self._lock:
            starting = [hold for hold in set(holds) if hold.waiting_since is None]
            for hold in starting:
                hold.waiting_since = now
        for hold in starting:
            self._arm(hold)

    def orphaned_runs(self) -> list[str]:
        """The held runs that wait for a host."""
        with self._lock:
            return [hold.run for hold in self.holds.values() if hold.waiting_since is not None]

    def hand_over(self, host: KernelBridge) -> None:
        """``host`` is attached: it takes over the runs that wait for a host, and is
        sent their calls of the tools it serves (a run with calls left for another
        host keeps waiting, and its grace period runs on)."""
        with self._lock:
            calls = [call for call in self._waiting if call.tool in host.tools]
            for call in calls:
                self._waiting.remove(call)
            left = {run_of(call.parent) for call in self._waiting}
            for hold in self.holds.values():
                if hold.waiting_since is not None and hold.run not in left:
                    hold.waiting_since, hold.session = None, host.host_session
        if calls:
            host.take_calls(calls)

    def _start(self, call: PendingCall) -> None:
        """A call of a held run while no host serves its tool: it waits for one."""
        hold = self.holds.get(run_of(call.parent))
        if hold is None:  # the run ended, or its grace period passed, meanwhile
            raise HostDisconnectedError(call.tool, "HostDisconnectedError", NO_HOST_CAME)
        with self._lock:
            self._waiting.append(call)
        self._wait_for_host([hold])

    def _pump(self) -> None:
        """Nothing is sent from here: the calls wait for ``hand_over``."""

    # -- the grace period ---------------------------------------------------------------

    def _arm(self, hold: Hold) -> None:
        """Have ``_on_timer`` look at ``hold`` when its grace period ends (any thread)."""
        self.loop.call_soon_threadsafe(self._set_hold_timer, hold)

    def _set_hold_timer(self, hold: Hold) -> None:
        since = hold.waiting_since
        if hold.timer is not None:
            hold.timer.cancel()
            hold.timer = None
        if since is not None:
            delay = max(0.0, since + hold.grace - time.monotonic())
            hold.timer = self.loop.call_later(delay, self._on_hold_timer, hold)

    def _on_hold_timer(self, hold: Hold) -> None:
        hold.timer = None
        with self._lock:
            since = hold.waiting_since
            if since is None or self.holds.get(hold.run) is not hold:
                return  # a host took it over, or the run ended
            if time.monotonic() < since + hold.grace:  # it waited again, later
                expired = False
            else:
                expired = True
                del self.holds[hold.run]
        if expired:
            self._fail(hold, f"{NO_HOST_CAME} within {hold.grace:g} s (the run's grace period)")
        else:
            self._set_hold_timer(hold)

    def _fail(self, hold: Hold, message: str) -> None:
        with self._lock:
            calls = [call for call in self._waiting if run_of(call.parent) == hold.run]
            for call in calls:
                self._waiting.remove(call)
        if hold.timer is not None:
            self.loop.call_soon_threadsafe(hold.timer.cancel)
        for call in calls:
            self._settle(
                call, error=HostDisconnectedError(call.tool, "HostDisconnectedError", message)
            )


NO_HOST_CAME = "the host of this resumable run went, and no host serving this tool came back"


def run_of(parent: dict[str, Any]) -> str:
    """The msg_id of the request a call or a run belongs to."""
    return str(parent.get("header", {}).get("msg_id", ""))


def grace_of(parent: dict[str, Any]) -> float | None:
    """The grace period a request asks for as a resumable run, if it does."""
    metadata = parent.get("metadata")
    hold = metadata.get(HOLD_METADATA) if isinstance(metadata, dict) else None
    if hold is None or body_problem(HOLD_METADATA, hold, RUN_METADATA) is not None:
        return None
    grace = float(hold["grace"])
    return grace if math.isfinite(grace) and grace > 0 else None
