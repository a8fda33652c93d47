"""``ForkServerProvisioner``: jupyter_client's ``LocalProvisioner``, forking instead.

A kernelspec names it in its metadata (``progtc-kernel install --fork-server`` writes
one)::

    "metadata": {"kernel_provisioner": {"provisioner_name": "progtc-fork-server",
                                        "config": {"preload": ["numpy"]}}}

and any jupyter_client user (a ``KernelManager``, Jupyter Server, nbclient,
``progtc-kernel serve``) then gets kernels forked from a template (see ``process.py``).
A kernel that cannot be forked is spawned as ``LocalProvisioner`` would: off Linux, a
kernelspec that does not run ``python -m ipykernel_launcher``, or an environment that
differs from the template's in what an interpreter reads when it starts
(``PYTHONPATH``, ``PYTHONHASHSEED``, ``OMP_NUM_THREADS``...).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from typing import IO, Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from traitlets import Integer, List, Unicode

from . import PROVISIONER_NAME
from .process import (
    DEFAULT_MAX_KERNELS,
    ForkedProcess,
    StaleTemplate,
    TemplateError,
    can_fork,
    replace_stale,
    startup_environment,
    template_for,
)

__all__ = ["PROVISIONER_NAME", "ForkServerProvisioner", "why_spawn"]

LAUNCHERS = ("ipykernel_launcher", "ipykernel")


class ForkServerProvisioner(LocalProvisioner):
    """Starts each kernel by forking a template that has imported it already.

    Configured by the kernelspec's ``kernel_provisioner.config`` (or traitlets config):

    Args:
        preload: Modules the template imports for every kernel, e.g. ``["numpy"]``.
        max_kernels: Kernels one template forks before a new one replaces it (they all
            share its string-hash secret).
    """

    preload = List(Unicode(), help="Modules the template imports for every kernel.").tag(
        config=True
    )
    max_kernels = Integer(
        DEFAULT_MAX_KERNELS, help="Kernels one template forks before it is replaced."
    ).tag(config=True)

    #: Why the running kernel was spawned rather than forked (``None``: it was forked).
    spawned_because: str | None = None

    @property
    def forked(self) -> bool:
        """Whether the running kernel was forked from a template."""
        return isinstance(self.process, ForkedProcess)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env = dict(kwargs.get("env") or os.environ)
        reason, python = why_spawn(cmd, env, tuple(self.preload))
        if python is not None:
            try:
                process = await asyncio.to_thread(self._fork, python, cmd, env, kwargs)
            except TemplateError as exc:
                reason = str(exc)
                self.log.warning("spawning the kernel instead of forking it: %s", reason)
            else:
                self.spawned_because = None
                self.process = process
                self.pid = self.pgid = process.pid  # it called setsid()
                self.cwd = kwargs.get("cwd") or os.getcwd()
                return self.connection_info
        self.log.debug("spawning the kernel: %s", reason)
        self.spawned_because = reason
        return await super().launch_kernel(cmd, **kwargs)

    def _fork(
        self, python: str, cmd: list[str], env: dict[str, str], kwargs: dict[str, Any]
    ) -> ForkedProcess:
        preload = tuple(self.preload)
        for _attempt in range(2):
            template = template_for(python, preload, self.max_kernels)
            if startup_environment(env) != startup_environment(template.environment):
                raise TemplateError("the kernel's start-up environment differs")
            outputs = _Outputs(kwargs.get("stdout"), kwargs.get("stderr"))
            cwd = os.fspath(kwargs.get("cwd") or os.getcwd())
            try:
                return template.fork(
                    cmd[3:], env, cwd, outputs.stdout, outputs.stderr, outputs.stderr_reader
                )
            except StaleTemplate:
                outputs.discard_reader()
                replace_stale(template)
            except BaseException:
                outputs.discard_reader()
                if template.alive:
                    raise
                # It died since: the next attempt starts another.
            finally:
                outputs.close_ours()
        raise TemplateError("the fork server's template kept failing")

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        info["forked"] = self.forked
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """A forked kernel dies with its lifeline (our process): nothing to reattach to."""
        await super().load_provisioner_info(provisioner_info)


def why_spawn(
    cmd: list[str], env: dict[str, str], preload: tuple[str, ...]
) -> tuple[str, str | None]:
    """``("", python)`` when the kernel can be forked from ``python``'s template, else
    why not and ``None``."""
    if not can_fork():
        return f"the fork server runs on Linux only, not {sys.platform}", None
    if len(cmd) < 3 or cmd[1] != "-m" or cmd[2] not in LAUNCHERS:
        return f"the kernel does not run python -m ipykernel_launcher: {cmd[:3]}", None
    python = shutil.which(cmd[0])
    if python is None:
        return f"no interpreter at {cmd[0]!r}", None
    return "", os.path.abspath(python)


class _Outputs:
    """The descriptors a forked kernel's stdout and stderr go to, as Popen's ``stdout=``
    and ``stderr=`` say: ``None`` ours, ``PIPE`` a pipe we read, ``DEVNULL``, a file."""

    def __init__(self, stdout: Any, stderr: Any) -> None:
        self._close: list[int] = []
        self.stderr_reader: IO[bytes] | None = None
        self.stdout = self._fd(stdout, 1)
        if stderr == subprocess.STDOUT:
            self.stderr = self.stdout
        elif stderr == subprocess.PIPE:
            reader, writer = os.pipe()
            self._close.append(writer)
            self.stderr_reader = os.fdopen(reader, "rb")
            self.stderr = writer
        else:
            self.stderr = self._fd(stderr, 2)

    def _fd(self, value: Any, ours: int) -> int:
        if value is None:
            return ours
        if value == subprocess.DEVNULL:
            fd = os.open(os.devnull, os.O_WRONLY)
            self._close.append(fd)
            return fd
        if value == subprocess.PIPE:  # nobody reads a kernel's stdout: spare the pipe
            return self._fd(subprocess.DEVNULL, ours)
        return value if isinstance(value, int) else int(value.fileno())

    def discard_reader(self) -> None:
        if self.stderr_reader is not None:
            self.stderr_reader.close()

    def close_ours(self) -> None:
        """Once the kernel has its copies (or failed to start)."""
        for fd in self._close:
            os.close(fd)
        self._close.clear()
