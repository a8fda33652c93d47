"""The fork server's template: a process that has imported a kernel and forks copies.

Run by path (``python .../template.py --socket PATH``) on the kernel's interpreter, so
it needs only the standard library and ipykernel. It imports ipykernel, IPython, zmq,
tornado, the progtc_kernel extension when installed and the user's preloads, and then
holds one thread, no zmq context, no event loop and no IPython shell: only its own file
descriptors, which each child closes through their owners. One connection per kernel
(a SOCK_SEQPACKET Unix socket) carries the request, with the kernel's stdout and stderr
as file descriptors, the reply ``{"pid": N}`` and later ``{"exit": code}``; the same
connection is the kernel's lifeline: when the requester goes, its kernel is killed. The
template's stdin is its own lifeline from the host: at its end every kernel is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

#: What a kernel imports while it starts, imported once here (a missing one is skipped).
KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.comm",
    "ipykernel.debugger",
    "IPython.core.completer",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.history",
    "IPython.core.logger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "IPython.utils.wildcard",
    "tornado.platform.asyncio",
    "sqlite3",
    "pdb",
    "faulthandler",
    "psutil",
    "jedi",
    "progtc_kernel.kernel_side.extension",
    "progtc_kernel.kernel_side.bridge",
    "progtc_kernel.kernel_side.tools_module",
    "progtc_kernel.kernel_side.script",
    "progtc_kernel.kernel_side.bootstrap",
    "zmq.utils.monitor",
)
PR_SET_PDEATHSIG = 1
MAX_MESSAGE = 1 << 20


def preload(extra: list[str]) -> list[str]:
    """Import what every kernel imports, then the user's preloads; a user's preload that
    fails to import stops the template (the user asked for it), a kernel module only
    missing from this interpreter is skipped."""
    for name in KERNEL_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for name in extra:
        importlib.import_module(name)
    warm_caches()
    files: set[str] = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            files.add(os.path.realpath(file))
    return sorted(files)


def warm_caches() -> None:
    """Fill the caches every kernel fills on its first cell, once here: IPython
    tokenizes each cell, and ``tokenize`` compiles its patterns (a few milliseconds of
    every kernel's CPU) on first use. Pure data: no thread, file or loop is left."""
    with contextlib.suppress(ImportError):
        from IPython.core.inputtransformer2 import TransformerManager

        cells = TransformerManager()  # type: ignore[no-untyped-call]
        cells.transform_cell("from tools import echo\nprint(await echo(1))\n")


def stat_files(paths: list[str]) -> dict[str, int]:
    found = {}
    for path in paths:
        try:
            found[path] = os.stat(path).st_mtime_ns
        except OSError:
            found[path] = -1
    return found


def unclean_state() -> list[str]:
    """What a child must not inherit and the template holds anyway (empty: clean)."""
    problems = []
    if threading.active_count() != 1:
        problems.append(
            f"{threading.active_count()} threads: "
            + ", ".join(t.name for t in threading.enumerate())
        )
    import asyncio.events

    policy = getattr(asyncio.events, "_event_loop_policy", None)
    if policy is not None and getattr(getattr(policy, "_local", None), "_loop", None):
        problems.append("an asyncio event loop")
    zmq = sys.modules.get("zmq")
    if zmq is not None and zmq.Context._instance is not None:
        problems.append("a zmq context")
    shell = sys.modules.get("IPython.core.interactiveshell")
    if shell is not None and shell.InteractiveShell.initialized():
        problems.append("an IPython shell")
    return problems


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


class Template:
    """The serving loop: requests, forks, reaping, lifelines."""

    def __init__(self, path: str, files: list[str]) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        self.connections: set[socket.socket] = set()
        self.kernels: dict[int, socket.socket] = {}  # pid -> its lifeline
        self.files = files
        self.mtimes = stat_files(files)
        self.retiring = False
        self.forked = 0

    def run(self) -> None:
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        self.selector.register(self.listener, selectors.EVENT_READ, self.accept)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, self.reap)
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, self.host_gone)
        while not (self.retiring and not self.kernels):
            for key, _ in self.selector.select():
                key.data(key.fileobj)

    def accept(self, listener: socket.socket) -> None:
        connection, _ = listener.accept()
        self.connections.add(connection)
        self.selector.register(connection, selectors.EVENT_READ, self.receive)

    def receive(self, connection: socket.socket) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(connection, MAX_MESSAGE, 4)
        except OSError:
            data, fds = b"", []
        if not data:
            self.lifeline_lost(connection)
            return
        try:
            request = json.loads(data)
            reply = self.handle(request, fds, connection)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        self.send(connection, reply)

    def handle(
        self, request: dict[str, Any], fds: list[int], connection: socket.socket
    ) -> dict[str, Any]:
        op = request.get("op")
        if op == "state":
            return {
                "problems": unclean_state(),
                "fds": open_fds(),
                "kernels": sorted(self.kernels),
                "hash_seed": hash("progtc"),
                "forked": self.forked,
            }
        if op == "retire":
            self.retiring = True
            self.selector.unregister(self.listener)
            self.listener.close()
            return {"retired": True}
        if op != "fork":
            raise ValueError(f"unknown request {op!r}")
        if self.stale():
            return {"error": "stale"}
        problems = unclean_state()
        if problems:
            return {"error": "the template is not clean: " + "; ".join(problems)}
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.become_kernel(request, fds)  # never returns
        self.forked += 1
        self.kernels[pid] = connection
        return {"pid": pid}

    def stale(self) -> bool:
        """Whether a file imported here changed since (a stat per file: about 1 ms)."""
        return stat_files(self.files) != self.mtimes

    def send(self, connection: socket.socket, message: dict[str, Any]) -> None:
        # The requester may be gone: its lifeline is then read as lost.
        with contextlib.suppress(OSError):
            connection.send(json.dumps(message).encode())

    def reap(self, wakeup: int) -> None:
        try:
            while os.read(wakeup, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.kernels.pop(pid, None)
            if connection is not None:
                self.send(connection, {"exit": os.waitstatus_to_exitcode(status)})

    def lifeline_lost(self, connection: socket.socket) -> None:
        """The requester closed the connection, or died: its kernel goes too."""
        for pid, owner in list(self.kernels.items()):
            if owner is connection:
                kill_group(pid)
        self.selector.unregister(connection)
        self.connections.discard(connection)
        connection.close()

    def host_gone(self, stdin: int) -> None:
        if os.read(stdin, 512):
            return
        for pid in self.kernels:
            kill_group(pid)
        os._exit(0)

    # -- in the child -------------------------------------------------------------

    def become_kernel(self, request: dict[str, Any], fds: list[int]) -> None:
        code = 1
        try:
            template_pid = os.getppid()
            detach(template_pid)
            self.close_in_child(fds)
            stdio(fds)
            code = run_kernel(request, template_pid, ready=fds[2])
        except SystemExit as exc:
            code = exit_code(exc)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def close_in_child(self, keep: list[int]) -> None:
        """Close what the template owns, each through its owner (so no finalizer later
        closes a reused number), then any descriptor left above 2 but ``keep``."""
        signal.set_wakeup_fd(-1)
        self.selector.close()
        self.listener.close()
        for connection in self.connections:
            connection.close()
        os.close(self.wakeup_r)
        os.close(self.wakeup_w)
        for fd in open_fds():
            if fd > 2 and fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)


def detach(template_pid: int) -> None:
    """A session of its own (an interrupt to its group reaches this kernel only), death
    with the template, and the signal dispositions of a fresh interpreter."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != template_pid:  # the template died before the line above
        os._exit(1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def stdio(fds: list[int]) -> None:
    """stdin from /dev/null, stdout and stderr where the requester said."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds[:2]:
        os.close(fd)


def show_command_line(words: list[str]) -> None:
    """Show ``words`` as this process's command line (``ps``, ``/proc/PID/cmdline``):
    a forked kernel looks like the spawned one it stands for (its connection file
    says which). They are written over the template's own, which has room for them."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48, 49
    text = "\0".join(words).encode()[: end - start - 1]
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)


def run_kernel(request: dict[str, Any], template_pid: int, ready: int) -> int:
    """Start the kernel app; write to ``ready`` once its sockets are bound (so that the
    manager's clients connect at once, not after ZMQ's reconnect interval)."""
    show_command_line([request["python"], "-m", request["argv0"], *request["arguments"]])
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    time.tzset()
    sys.path.insert(0, os.getcwd())  # as ``python -m ipykernel_launcher`` would
    sys.argv = [request["argv0"], *request["arguments"]]
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:  # random re-seeds itself after a fork; numpy does not
        numpy_random.seed()
    from ipykernel.kernelapp import IPKernelApp

    # parent_handle's default was read from $JPY_PARENT_PID at import, in the template.
    app = IPKernelApp.instance(parent_handle=template_pid)
    try:
        app.initialize(request["arguments"])  # type: ignore[no-untyped-call]
        os.write(ready, b"1")
    finally:
        os.close(ready)
    app.start()  # type: ignore[no-untyped-call]
    return 0


def exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def main() -> None:
    arguments = sys.argv[1:]
    socket_path = arguments[arguments.index("--socket") + 1]
    extra = (
        arguments[arguments.index("--preload") + 1].split(",") if "--preload" in arguments else []
    )
    # Run by path, Python put this file's folder first on sys.path: a kernel's is its cwd.
    if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]
    try:
        import ipykernel  # noqa: F401  # without it, the kernel is spawned (and says why)
    except ImportError:
        print("error " + json.dumps("ipykernel is not installed there"), flush=True)
        sys.exit(1)
    try:
        files = preload([name for name in extra if name])
    except Exception:
        print("error " + json.dumps(traceback.format_exc()), flush=True)
        sys.exit(1)
    gc.collect()
    gc.freeze()  # keep the preloaded objects' pages shared with the children longer
    problems = unclean_state()
    if problems:
        print(
            "error " + json.dumps("importing the preloads left " + "; ".join(problems)), flush=True
        )
        sys.exit(1)
    template = Template(socket_path, files)
    print("ready " + json.dumps({"pid": os.getpid(), "python": sys.executable}), flush=True)
    template.run()


if __name__ == "__main__":
    main()
