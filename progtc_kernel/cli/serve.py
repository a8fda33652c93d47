"""``progtc-kernel serve``: progtc's server, on Jupyter kernels, inside the sandbox.

A Jupyter Server whose token is the API key, with a pool of warm kernels and
progtc's HTTP API (see ``progtc_kernel.server``). Without a key it generates one and
prints it, as Jupyter does: no request runs code without it. It stops on Ctrl-C or
SIGTERM, shutting down every kernel it started.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import signal
import socket
import sys
from typing import TYPE_CHECKING

from ..timeouts import DEFAULT_POOL_WAIT, DEFAULT_SEND, DEFAULT_SESSION_IDLE, Timeout
from ._common import UsageError, add_timeout_options, seconds
from .install import preload_list

# What progtc clients sending 'Authorization: Bearer' get (progtc_api.DIALECTS; not
# imported from there: that needs the server extra).
DIALECTS = ("0.1.1", "0.1.5")

if TYPE_CHECKING:
    from ._common import Subcommands


def add_parser(commands: Subcommands) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve progtc's API and a warm kernel pool (a Jupyter Server)",
        description="Run a Jupyter Server with a pool of warm kernels that serve host "
        "tools, for AsyncProgtcClient (progtc_kernel) and for the progtc package's own "
        "clients. The API key is the server's token; without one, a key is generated "
        "and printed. Needs the 'server' extra.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8000, help="the port (default: 8000)")
    serve.add_argument(
        "--api-key",
        default=os.environ.get("PROGTC_API_KEY"),
        metavar="KEY",
        help="the key clients must send. Prefer setting PROGTC_API_KEY: "
        "a key on the command line shows in ps. Without either, a key is "
        "generated and printed (on a loopback --host only)",
    )
    add_timeout_options(
        serve,
        Timeout(),
        helps={
            "run": "ceiling of one execution",
            "tool_call": "ceiling of one tool call",
            "start": "how long a pool kernel may take to start and load the extension",
        },
        aliases={"run": ["--code-execution-timeout"]},  # progtc's spelling
    )
    serve.add_argument(
        "--pool-size", type=int, default=2, metavar="N", help="warm kernels kept ready (default: 2)"
    )
    serve.add_argument(
        "--max-kernels",
        type=int,
        default=16,
        metavar="N",
        help="kernels running at once, warm and busy (default: 16)",
    )
    serve.add_argument(
        "--pool-timeout",
        type=seconds,
        default=DEFAULT_POOL_WAIT,
        metavar="S",
        help="how long a request waits for a free kernel (default: 30; none: no limit)",
    )
    serve.add_argument(
        "--session-idle-timeout",
        type=seconds,
        default=DEFAULT_SESSION_IDLE,
        metavar="S",
        help="end a named session (and its kernel) nobody has used for S "
        "seconds (default: 600; none: never)",
    )
    serve.add_argument(
        "--kernel-name",
        metavar="NAME",
        help="the kernelspec of the pool's kernels (default: python3); it needs only ipykernel",
    )
    serve.add_argument(
        "--fork-server",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fork Python kernels from a template process that has imported ipykernel "
        "already: a tenth of the CPU per kernel start and half the memory (the default "
        "on Linux; --no-fork-server spawns each kernel)",
    )
    serve.add_argument(
        "--preload",
        metavar="MODULES",
        help="modules the fork server's template imports for every kernel, "
        "comma-separated (e.g. numpy,pandas)",
    )
    serve.add_argument(
        "--gateway-url",
        metavar="URL",
        help="keep the pool's kernels on this Jupyter Enterprise Gateway or Kernel Gateway "
        "(on a cluster, say) rather than on this machine",
    )
    serve.add_argument(
        "--gateway-token",
        default=os.environ.get("JUPYTER_GATEWAY_AUTH_TOKEN"),
        metavar="TOKEN",
        help="the gateway's token. Prefer setting JUPYTER_GATEWAY_AUTH_TOKEN: a token on "
        "the command line shows in ps",
    )
    serve.add_argument(
        "--progtc-dialect",
        choices=DIALECTS,
        default=DIALECTS[0],
        help="what progtc clients that send 'Authorization: Bearer' get as "
        "errors: 0.1.1 (the seed's release: type 'error' with a code; the "
        "default) or 0.1.5 (progtc 0.1.2 to 0.1.5: type 'runtime_error' "
        "etc.). progtc 0.1.6 and later send X-Progtc-API-Key and always "
        "get theirs",
    )
    serve.add_argument(
        "--max-output",
        type=int,
        default=10_000_000,
        metavar="N",
        help="characters of output one progtc API execution may print; one "
        "that prints more is stopped, saying so (default: 10000000)",
    )
    serve.add_argument(
        "--send-timeout",
        type=seconds,
        default=DEFAULT_SEND,
        metavar="S",
        help="a progtc API client that takes nothing the server sends for "
        "this long is cut off (default: 60)",
    )
    serve.add_argument(
        "--step-keep",
        type=seconds,
        default=300.0,
        metavar="S",
        help="how long a run of progtc's step API (/execute-code-step) waits live in "
        "its kernel for its next step; after that its kernel is shut down and the "
        "next step replays the code from the start, as progtc's server does "
        "(default: 300)",
    )
    serve.add_argument(
        "--verbose", action="store_true", help="log every request, as Jupyter Server does"
    )
    serve.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    try:
        from traitlets.config import Config

        from ..server.app import ProgtcKernelApp
        from ..server.websocket import MAX_MESSAGE_BYTES
    except ImportError as exc:
        from .._install import missing_extra

        raise UsageError(
            str(missing_extra("server", exc, "the server needs Jupyter Server"))
        ) from None
    if not args.api_key and not is_loopback(args.host):
        raise UsageError(
            f"refusing to listen on {args.host} without an API key: anyone "
            "who can reach it could run code; give --api-key KEY (or set "
            "PROGTC_API_KEY), or listen on 127.0.0.1"
        )
    if not 0 <= args.pool_size <= args.max_kernels:
        raise UsageError(
            f"--pool-size {args.pool_size} with --max-kernels "
            f"{args.max_kernels}: give 0 <= pool size <= max kernels"
        )
    if args.max_output < 1 or not args.send_timeout:
        raise UsageError(
            "give --max-output of at least 1 character, and --send-timeout of more than 0 seconds"
        )
    if args.step_keep is None:
        raise UsageError(
            "--step-keep needs a number of seconds: a live step run holds a kernel, "
            "and must end if its client never comes back"
        )
    if args.gateway_url:
        check_gateway(args)
        fork_server = False
    else:
        fork_server = fork_server_wanted(args.fork_server)
    if args.preload and not fork_server:
        raise UsageError("--preload applies to the fork server: drop --no-fork-server")
    api_key = args.api_key or secrets.token_urlsafe(24)
    config = Config()
    config.ServerApp.update(
        ip=args.host,
        port=args.port,
        port_retries=0,
        open_browser=False,
        answer_yes=True,
        allow_root=True,  # sandboxes and containers often run as root
        # (Jupyter Server spells "warning" WARN)
        log_level="INFO" if args.verbose else args.log_level.upper().replace("WARNING", "WARN"),
        # Jupyter Server's websocket ping timeout (90 s by default) is longer than its
        # interval, which tornado warns about at every connection: make them equal.
        tornado_settings={
            "websocket_max_message_size": MAX_MESSAGE_BYTES,
            "ws_ping_timeout": 30000,
        },
    )
    if args.gateway_url:
        # The gateway runs every kernel; Jupyter Server's gateway managers and websocket
        # (its defaults once GatewayClient.url is set) start them there and proxy to them.
        config.GatewayClient.update(url=args.gateway_url, auth_token=args.gateway_token or "")
        if args.start_timeout is not None:
            # A kernel start is one request to the gateway (a pod may pull an image):
            # it may take --start-timeout, not only Jupyter Server's 42 s.
            config.GatewayClient.request_timeout = max(args.start_timeout, 42.0)
        # (Jupyter Server's own proxy relays binary messages as text: the gateway
        # closes the connection at the first tool call's.)
        config.ServerApp.kernel_websocket_connection_class = (
            "progtc_kernel.server.gateway.BinaryGatewayConnection"
        )
        # (Jupyter's own POST /api/kernels under --max-kernels too)
        config.ServerApp.kernel_manager_class = (
            "progtc_kernel.server.pool.ServeGatewayKernelManager"
        )
    else:
        config.ServerApp.update(
            # Kernel websocket frames are checked before Jupyter Server decodes them,
            # and none may be larger than this.
            kernel_websocket_connection_class="progtc_kernel.server.websocket.CheckedConnection",
            # Every kernel, the pool's or Jupyter's own API's: under --max-kernels, its
            # IPython history in memory (no client reads another's code), on Unix sockets.
            kernel_manager_class="progtc_kernel.server.pool.ServeKernelManager",
        )
        config.ServeKernelManager.update(
            fork_server=fork_server, preload=preload_list(args.preload)
        )
    config.IdentityProvider.token = api_key
    config.ProgtcKernelApp.update(
        pool_size=args.pool_size,
        max_kernels=args.max_kernels,
        pool_timeout=args.pool_timeout,
        kernel_name=args.kernel_name,
        tool_call_timeout=args.tool_call_timeout,
        code_execution_timeout=args.run_timeout,
        start_timeout=args.start_timeout,
        progtc_dialect=args.progtc_dialect,
        max_output=args.max_output,
        send_timeout=args.send_timeout,
        session_idle_timeout=args.session_idle_timeout,
        step_keep=args.step_keep,
        announce=True,
        announce_key=not args.api_key,
    )
    try:
        server = ProgtcKernelApp.initialize_server(argv=[], config=config)  # type: ignore[no-untyped-call]
    except Exception as exc:  # the port in use, a bad address: say it, without a traceback
        raise UsageError(f"cannot start the server on {args.host}:{args.port}: {exc}") from None
    # Ctrl-C stops the server as SIGTERM does, kernels and all. (Jupyter Server handles
    # it only on a terminal, with a question; elsewhere the loop just ends and the
    # kernels outlive it.)
    signal.signal(signal.SIGINT, lambda signum, frame: server.stop(from_signal=True))
    server.start()
    return 0


def check_gateway(args: argparse.Namespace) -> None:
    """``--gateway-url`` is a server's URL, and asks for nothing that runs kernels here."""
    from urllib.parse import urlsplit

    parts = urlsplit(args.gateway_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"--gateway-url {args.gateway_url!r} is not a gateway's URL: give one like "
            "http://gateway.example:8888 (or https://...)"
        )
    if args.fork_server or args.preload:
        raise UsageError(
            "--fork-server and --preload fork kernels on this machine, but with "
            "--gateway-url the gateway runs them: drop one or the other"
        )


def fork_server_wanted(given: bool | None) -> bool:
    """``--fork-server``/``--no-fork-server`` if given; else on Linux, where it forks."""
    if given is not None:
        return given
    from ..kernels.fork_server import fork_server_default

    return sys.platform.startswith("linux") or fork_server_default()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses
    )
