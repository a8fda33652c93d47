"""The Jupyter Server extension behind ``progtc-kernel serve``.

It adds to a Jupyter Server (authenticated as the server is: in ``serve``, the API key
is the server's token):

- a pool of warm kernels with the ``progtc_kernel`` extension loaded, leased through
  ``/progtc-kernel/api/kernels`` (``AsyncProgtcClient`` then drives its kernel over
  the server's own kernel websocket);
- progtc's HTTP API (``/ping``, ``/execute-code``, ``/tool-results``, and 0.2's step
  API ``/execute-code-step``, whose runs stay live between steps) for the clients
  of the ``progtc`` package, which the server itself hosts on a pool kernel.

It loads into any Jupyter Server too: ``jupyter server
--ServerApp.jpserver_extensions="{'progtc_kernel.server': True}"``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, Unicode

from .._version import __version__
from ..timeouts import (
    DEFAULT_POOL_WAIT,
    DEFAULT_RUN,
    DEFAULT_SEND,
    DEFAULT_SESSION_IDLE,
    DEFAULT_START,
    DEFAULT_TOOL_CALL,
)
from .pool import GatewayKernelPool, KernelPool, ServeGatewayKernelManager, ServeKernelManager
from .progtc_api import DIALECTS
from .steps import DEFAULT_STEP_KEEP, StepRuns


@dataclass
class Limits:
    """The server's ceilings: a client may ask for less, never more (seconds)."""

    tool_call_timeout: float | None
    code_execution_timeout: float | None


# Finished progtc API executions remembered, so that a result their client posts late
# (a handler still running when the run ended) is accepted, not refused.
FINISHED_KEPT = 4096


@dataclass
class Service:
    """What the handlers share: the pool, the ceilings, the live executions, and how
    the progtc API answers (the dialect of Bearer clients, its bounds, its counters)."""

    pool: KernelPool
    limits: Limits
    steps: StepRuns
    dialect: str = DIALECTS[0]
    max_output: int = 10_000_000
    send_timeout: float = DEFAULT_SEND
    executions: dict[str, Any] = field(default_factory=dict)  # progtc API runs by id
    finished: OrderedDict[str, None] = field(default_factory=OrderedDict)
    output_stopped: int = 0  # executions stopped for printing more than max_output
    clients_cut_off: int = 0  # clients that took nothing for send_timeout
    lease_keepalives: int = 0  # keep-alives sent to requests waiting for a kernel
    # Lease requests (Prefer: respond-async) waiting for a kernel, by id, and how many
    # times one was answered "still waiting" (202).
    lease_requests: dict[str, Any] = field(default_factory=dict)
    lease_asks_pending: int = 0

    def end(self, execution_id: str) -> None:
        """A progtc API execution is over: forget it, remembering that it was."""
        self.executions.pop(execution_id, None)
        self.finished[execution_id] = None
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pool": self.pool.status(),
            "limits": asdict(self.limits),
            "lease_requests": {
                "waiting": len(self.lease_requests),
                "answered_pending": self.lease_asks_pending,
            },
            "progtc_api": {
                "dialect": self.dialect,
                "running": len(self.executions),
                "max_output": self.max_output,
                "send_timeout": self.send_timeout,
                "output_stopped": self.output_stopped,
                "clients_cut_off": self.clients_cut_off,
                "lease_keepalives": self.lease_keepalives,
            },
            "step_api": {
                "live_runs": len(self.steps.runs),
                "keep": self.steps.keep,
                "resumed": self.steps.resumed,
                "replayed": self.steps.replayed,
                "expired": self.steps.expired,
            },
        }


class ProgtcKernelApp(ExtensionApp):
    """progtc-kernel's server extension: the warm pool and progtc's HTTP API."""

    name = "progtc_kernel"
    load_other_extensions = False

    @classmethod
    def get_extension_package(cls) -> str:
        return "progtc_kernel.server"  # not the top package: kernels import that one

    pool_size = Int(2, help="Warm kernels kept ready.").tag(config=True)
    max_kernels = Int(16, help="Kernels running at once, warm and leased.").tag(config=True)
    pool_timeout = Float(
        DEFAULT_POOL_WAIT,
        allow_none=True,
        help="Seconds a request waits for a kernel before a 503.",
    ).tag(config=True)
    kernel_name = Unicode(
        None, allow_none=True, help="The kernelspec of pool kernels (default: the server's)."
    ).tag(config=True)
    tool_call_timeout = Float(
        DEFAULT_TOOL_CALL, allow_none=True, help="Ceiling of one tool call, in seconds."
    ).tag(config=True)
    code_execution_timeout = Float(
        DEFAULT_RUN, allow_none=True, help="Ceiling of one execution, in seconds."
    ).tag(config=True)
    start_timeout = Float(
        DEFAULT_START,
        allow_none=True,
        help="Seconds a pool kernel may take to start and load the extension.",
    ).tag(config=True)
    progtc_dialect = Enum(
        list(DIALECTS),
        DIALECTS[0],
        help="The final messages progtc clients that send 'Authorization: "
        "Bearer' get: '0.1.1' (the seed's release) or '0.1.5' (0.1.2 to "
        "0.1.5). Clients of 0.1.6 and later always get theirs.",
    ).tag(config=True)
    max_output = Int(
        10_000_000,
        help="Characters of output one progtc API execution "
        "may print; one that prints more is stopped.",
    ).tag(config=True)
    send_timeout = Float(
        DEFAULT_SEND,
        help="Seconds a progtc API client may take nothing the server sends before it is cut off.",
    ).tag(config=True)
    announce_key = Bool(False, help="Print the API key with the address (it was generated).").tag(
        config=True
    )
    session_idle_timeout = Float(
        DEFAULT_SESSION_IDLE,
        allow_none=True,
        help="Seconds a named session may go unused before it is ended (None: never).",
    ).tag(config=True)
    step_keep = Float(
        DEFAULT_STEP_KEEP,
        help="Seconds a step API run waits live in its kernel for its next step; "
        "after that its kernel is shut down, and the next step replays the code.",
    ).tag(config=True)
    announce = Bool(False, help="Print where the server listens, once it does.").tag(config=True)

    def initialize_settings(self) -> None:
        assert self.serverapp is not None  # linked before settings are initialized
        pool = self._pool(
            size=self.pool_size,
            max_kernels=self.max_kernels,
            pool_timeout=self.pool_timeout,
            code_execution_timeout=self.code_execution_timeout,
            start_timeout=self.start_timeout,
            kernel_name=self.kernel_name,
            session_idle_timeout=self.session_idle_timeout,
        )
        if isinstance(
            self.serverapp.kernel_manager, (ServeKernelManager, ServeGatewayKernelManager)
        ):
            # The ceiling holds for every kernel the server starts, not only the pool's.
            self.serverapp.kernel_manager.max_kernels = self.max_kernels
        limits = Limits(self.tool_call_timeout, self.code_execution_timeout)
        self.service = Service(
            pool,
            limits,
            StepRuns(pool, self.step_keep),
            dialect=self.progtc_dialect,
            max_output=self.max_output,
            send_timeout=self.send_timeout,
        )
        self.settings["progtc_kernel"] = self.service

    def _pool(self, **options: Any) -> KernelPool:
        """The server's own kernels' pool, or one on the gateway the server hands its
        kernels to (``--GatewayClient.url``)."""
        assert self.serverapp is not None
        gateway = self.serverapp.gateway_config
        if not gateway.gateway_enabled:
            return KernelPool(self.serverapp.kernel_manager, **options)
        from ..kernels.jupyter_server import JupyterServer

        server = JupyterServer(
            str(gateway.url),
            token=gateway.auth_token or "",
            headers=_gateway_headers(gateway),
            validate_cert=gateway.validate_cert,
            token_option="--gateway-token",
        )
        return GatewayKernelPool(self.serverapp.kernel_manager, server, **options)

    def initialize_handlers(self) -> None:
        from . import handlers, progtc_api, steps

        self.handlers.extend([*handlers.routes(), *progtc_api.routes(), *steps.routes()])

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        self.service.pool.start()
        if self.announce_key:  # (before the address: whoever waits for that has it)
            print(
                "progtc-kernel serve: API key (generated for this run; choose one "
                "with PROGTC_API_KEY): " + serverapp.identity_provider.token,
                flush=True,
            )
        if self.announce:
            limits = self.service.limits
            print(
                f"progtc-kernel serve: listening on {serverapp.connection_url} "
                f"({self.pool_size} warm kernels, at most {self.max_kernels}; ceilings: "
                f"{_seconds(limits.code_execution_timeout)} per execution, "
                f"{_seconds(limits.tool_call_timeout)} per tool call). Ctrl-C stops it.",
                flush=True,
            )

    async def stop_extension(self) -> None:
        await self.service.steps.close()
        await self.service.pool.stop()


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g} s"


def _gateway_headers(gateway: Any) -> dict[str, str]:
    """The headers Jupyter Server sends the gateway (``GatewayClient.headers``, JSON)."""
    import json

    return {str(k): str(v) for k, v in json.loads(gateway.headers or "{}").items()}
