"""The host's side of the fork server: template processes, and forked kernels.

A ``TemplateProcess`` is one template (see ``template.py``) on one interpreter with one
set of preloads; ``template_for`` keeps one per (interpreter, preloads) in this process,
started on first use, replaced when it died, when it has forked ``max_kernels`` kernels
or when a file it loaded changed (it then says "stale"): the old one is retired, and
exits once its last kernel has. ``ForkedProcess`` is a forked kernel as a
``subprocess.Popen``: jupyter_client's ``LocalProvisioner`` and everything that reads
a kernel's process (its exit code, its stderr) work with it unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("progtc_kernel")

TEMPLATE_SCRIPT = str(Path(__file__).resolve().with_name("template.py"))
DEFAULT_MAX_KERNELS = 100
MAX_REPLY = 1 << 20
COMMAND_LINE_ROOM = 4096
BOUND_WAIT = 30.0  # seconds: see until_bound

# Read by an interpreter at its start (or by a preloaded library at import): a kernel
# whose environment differs here from the template's cannot be forked from it.
STARTUP_VARIABLES = frozenset(
    {"LANG", "LC_ALL", "LC_CTYPE", "VECLIB_MAXIMUM_THREADS", "TZDIR", "SSL_CERT_FILE"}
)
STARTUP_PREFIXES = ("PYTHON", "LD_", "MALLOC_")
STARTUP_SUFFIXES = ("_NUM_THREADS",)


class TemplateError(RuntimeError):
    """The template could not start, or could not fork a kernel."""


class StaleTemplate(TemplateError):
    """A file the template loaded changed since: a new template is needed."""


def startup_environment(env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` that take effect only when an interpreter starts."""
    return {
        name: value
        for name, value in env.items()
        if name in STARTUP_VARIABLES
        or name.startswith(STARTUP_PREFIXES)
        or name.endswith(STARTUP_SUFFIXES)
    }


def template_environment() -> dict[str, str]:
    """The environment templates start with: ours, less what jupyter_client sets per kernel."""
    return {name: value for name, value in os.environ.items() if not name.startswith("JPY_")}


class ForkedProcess(subprocess.Popen[bytes]):
    """A kernel forked by a template, with the part of ``Popen``'s API jupyter_client
    uses. Its exit status arrives on its lifeline (the template reaps it); its pidfd
    (Linux 5.3+) says at once that it has ended, and carries its signals."""

    def __init__(self, pid: int, lifeline: socket.socket, stderr: IO[bytes] | None) -> None:
        # Popen.__init__ is not called: there is no child of ours to create.
        self._child_created = False
        self.args = ["<forked kernel>"]
        self.pid = pid
        self.returncode: Any = None
        self.stdin = None
        self.stdout = None
        self.stderr = stderr
        self._lifeline = lifeline
        self._ended = threading.Event()
        self._pidfd = _pidfd(pid)
        threading.Thread(
            target=self._follow, daemon=True, name=f"progtc-kernel-lifeline-{pid}"
        ).start()

    def _follow(self) -> None:
        try:
            data = self._lifeline.recv(MAX_REPLY)
        except OSError:
            data = b""
        if data:
            code = int(json.loads(data)["exit"])
        else:  # the template died: the kernel dies with it (PDEATHSIG)
            self._until_gone(timeout=10)
            code = -signal.SIGKILL
        self.returncode = code
        self._lifeline.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._ended.set()

    def _until_gone(self, timeout: float | None) -> bool:
        pidfd = self._pidfd
        if pidfd is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            return bool(select.select([pidfd], [], [], timeout)[0])
        return True  # closed under us: it has ended

    def poll(self) -> int | None:
        if self.returncode is None and self._until_gone(timeout=0):
            # Ended: the template relays its status as soon as it has reaped it.
            self._ended.wait(10)
        return self.returncode  # type: ignore[no-any-return]

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode  # type: ignore[no-any-return]

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        pidfd = self._pidfd
        if pidfd is not None and hasattr(signal, "pidfd_send_signal"):
            with contextlib.suppress(OSError):  # ended, or its pidfd closed just now
                signal.pidfd_send_signal(pidfd, sig)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:  # Popen's warns about a child still running
        pass


def until_bound(ready: int) -> None:
    """Until the kernel has bound its sockets (it writes to ``ready``) or ended (the
    pipe closes): a client that connects then is answered at once, where one that came
    too early would retry only after ZMQ's reconnect interval (100 ms). Not a deadline:
    a kernel still starting after a while is returned to the manager as it is."""
    with contextlib.suppress(OSError):
        select.select([ready], [], [], BOUND_WAIT)


def _pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


class TemplateProcess:
    """One template process on ``python`` with ``preload`` imported (see the module doc)."""

    def __init__(self, python: str, preload: tuple[str, ...] = ()) -> None:
        self.python = python
        self.preload = preload
        self.forked = 0
        self.environment = template_environment()
        self._folder = tempfile.mkdtemp(prefix="progtc-fork-")
        self.socket_path = os.path.join(self._folder, "template.sock")
        # Room for a forked kernel's command line (see template.show_command_line).
        room = " " * COMMAND_LINE_ROOM
        command = [python, TEMPLATE_SCRIPT, "--socket", self.socket_path, "--room", room]
        if preload:
            command += ["--preload", ",".join(preload)]
        try:
            self.process = self._start(command)
        except OSError as exc:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise TemplateError(
                f"the fork server's template on {python} did not start: {exc}"
            ) from None
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("ready "):
            detail = json.loads(line[len("error ") :]) if line.startswith("error ") else ""
            self.stop()
            raise TemplateError(
                f"the fork server's template on {python} did not start"
                + (f": {detail}" if detail else " (its stderr says why)")
            )
        self.pid = self.process.pid

    def _start(self, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,  # its lifeline: at our end, it kills its kernels
            stdout=subprocess.PIPE,
            # debugpy's notice about frozen modules, once per template, is noise here.
            env={**self.environment, "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
            cwd=self._folder,
            start_new_session=True,  # a Ctrl-C at our terminal is not for it
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(
        self,
        arguments: list[str],
        env: dict[str, str],
        cwd: str,
        stdout: int,
        stderr: int,
        stderr_reader: IO[bytes] | None = None,
    ) -> ForkedProcess:
        """Fork a kernel running ``ipykernel_launcher`` with ``arguments``: returns its
        process (``stdout``, ``stderr``: the descriptors its output goes to;
        ``stderr_reader``: our end of a pipe there). Raises ``StaleTemplate`` or
        ``TemplateError``."""
        request = {
            "op": "fork",
            "python": self.python,
            "argv0": "ipykernel_launcher",
            "arguments": arguments,
            "env": env,
            "cwd": cwd,
        }
        ready, ready_writer = os.pipe()
        try:
            lifeline = self._request(request, [stdout, stderr, ready_writer])
        finally:
            os.close(ready_writer)
        try:
            reply = self._reply(lifeline)
            if "pid" not in reply:
                lifeline.close()
                error = str(reply.get("error"))
                raise StaleTemplate(error) if error == "stale" else TemplateError(error)
            until_bound(ready)
        finally:
            os.close(ready)
        self.forked += 1
        global _forked_total
        _forked_total += 1
        return ForkedProcess(int(reply["pid"]), lifeline, stderr_reader)

    def state(self) -> dict[str, Any]:
        """What the template holds (threads, descriptors...), for the tests."""
        connection = self._request({"op": "state"}, [])
        with connection:
            return self._reply(connection)

    def retire(self) -> None:
        """Fork no more; exit once the last kernel is gone."""
        with contextlib.suppress(TemplateError):
            connection = self._request({"op": "retire"}, [])
            with connection:
                self._reply(connection)

    def stop(self) -> None:
        """End it now, and with it any kernel still running from it."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _request(self, request: dict[str, Any], fds: list[int]) -> socket.socket:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            connection.connect(self.socket_path)
            socket.send_fds(connection, [json.dumps(request).encode()], fds)
        except OSError as exc:
            connection.close()
            raise TemplateError(f"the fork server's template is gone ({exc})") from None
        return connection

    def _reply(self, connection: socket.socket) -> dict[str, Any]:
        try:
            data = connection.recv(MAX_REPLY)
        except OSError:
            data = b""
        if not data:
            raise TemplateError("the fork server's template is gone")
        reply: dict[str, Any] = json.loads(data)
        return reply


_lock = threading.Lock()
_forked_total = 0
_templates: dict[tuple[str, tuple[str, ...]], TemplateProcess] = {}
_retired: list[TemplateProcess] = []


def template_for(
    python: str, preload: tuple[str, ...] = (), max_kernels: int = DEFAULT_MAX_KERNELS
) -> TemplateProcess:
    """This process's template for ``python`` and ``preload``: started on first use,
    replaced when it died or has forked ``max_kernels`` kernels."""
    key = (python, preload)
    with _lock:
        template = _templates.get(key)
        if template is not None and (not template.alive or template.forked >= max_kernels):
            _retire(key)
            template = None
        if template is None:
            template = _templates[key] = TemplateProcess(python, preload)
        return template


def replace_stale(template: TemplateProcess) -> None:
    """Retire ``template`` (a file it loaded changed): the next use starts a new one."""
    with _lock:
        key = (template.python, template.preload)
        if _templates.get(key) is template:
            _retire(key)


def _retire(key: tuple[str, tuple[str, ...]]) -> None:
    template = _templates.pop(key)
    template.retire()
    _retired.append(template)
    for old in [old for old in _retired if not old.alive]:
        old.stop()  # reaps it, removes its folder
        _retired.remove(old)


def stop_templates() -> None:
    """Stop every template of this process, and the kernels forked from them."""
    with _lock:
        templates = [*_templates.values(), *_retired]
        _templates.clear()
        _retired.clear()
    for template in templates:
        template.stop()


def kernels_forked() -> int:
    """How many kernels this process has forked so far (spawned ones not counted)."""
    return _forked_total


def running_templates() -> list[TemplateProcess]:
    with _lock:
        return [template for template in [*_templates.values(), *_retired] if template.alive]


atexit.register(stop_templates)


def can_fork() -> bool:
    return sys.platform.startswith("linux")
