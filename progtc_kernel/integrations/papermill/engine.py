"""The papermill engine ``progtc``, registered from here under the ``papermill.engine``
entry point group (see the package's docstring for why here). The tools are the
``tools=`` given to ``papermill.execute_notebook`` (with ``tool_call_timeout=``
and ``python=``), else those of the modules or
``.py`` files named in ``PROGTC_KERNEL_TOOLS``, separated as in ``PATH`` (``:`` on
POSIX, ``;`` on Windows). Cells run on ``ToolNotebookClient``, so a failing tool
call, a timeout (``--execution-timeout``) or a dead kernel is a cell error in the
output notebook, and papermill reports it as such (exit status 1).

Needs ``pip install "progtc-kernel[papermill]"``.
"""

from __future__ import annotations

import os
from typing import Any

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine
from papermill.log import logger
from papermill.utils import merge_kwargs, remove_args

from ...exceptions import ToolDefinitionError
from ...host.loading import load_tools
from ...host.tools import ToolsLike
from ...timeouts import DEFAULT_TOOL_CALL, renamed
from ..nbclient import ToolNotebookClient

__all__ = ["TOOLS_VARIABLE", "ProgtcEngine", "tools_from_environment"]

TOOLS_VARIABLE = "PROGTC_KERNEL_TOOLS"


class ProgtcEngine(NBClientEngine):  # type: ignore[misc]
    """papermill's nbclient engine, on a kernel whose ``tools`` module calls host tools."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        tools: ToolsLike = None,
        tool_call_timeout: float | None = DEFAULT_TOOL_CALL,
        python: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``nb_man``'s notebook, as papermill's own engine does, with ``tools``
        (default: those named in ``PROGTC_KERNEL_TOOLS``) served to its cells.
        ``tool_call_timeout``: seconds a tool call may take (``None``: no limit;
        ``tool_timeout`` is its deprecated spelling).
        ``python``: the kernel's interpreter, instead of ``kernel_name``'s kernelspec.
        The other arguments are papermill's."""
        if tools is None:
            tools = tools_from_environment()
        if "tool_timeout" in kwargs:
            tool_call_timeout = renamed(
                "tool_timeout", "tool_call_timeout=", kwargs.pop("tool_timeout")
            )
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        options = merge_kwargs(
            kwargs,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name="" if python else kernel_name,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        client = _PapermillToolClient(
            nb_man, tools=tools, tool_call_timeout=tool_call_timeout, python=python, **options
        )
        return client.execute()


def tools_from_environment() -> ToolsLike:
    """The tools of the modules or files named in ``PROGTC_KERNEL_TOOLS``."""
    sources = [
        source for source in os.environ.get(TOOLS_VARIABLE, "").split(os.pathsep) if source.strip()
    ]
    if not sources:
        raise ToolDefinitionError(
            "the progtc engine serves host tools to the notebook: name their modules or .py "
            f"files in {TOOLS_VARIABLE} (e.g. {TOOLS_VARIABLE}=tools.py papermill IN OUT "
            "--engine progtc), or pass tools=[...] to papermill.execute_notebook"
        )
    return load_tools([source.strip() for source in sources])


class _PapermillToolClient(ToolNotebookClient, PapermillNotebookClient):  # type: ignore[misc]
    """papermill's client (it saves the notebook and its metadata cell by cell) with
    the tools served; ``ToolNotebookClient`` turns a dead kernel into a cell error."""

    timeout_option = (
        "papermill's --execution-timeout (execution_timeout= in papermill.execute_notebook)"
    )

    def execute(self, **kwargs: Any) -> Any:
        """papermill's ``execute``, minus the closing ``kernel_info`` request when the
        kernel has died: that would wait for a reply that never comes."""
        self.reset_execution_trackers()
        with self.setup_kernel(**kwargs):
            self.log.info(f"Executing notebook with kernel: {self.kernel_name}")
            self.papermill_execute_cells()
            if self.kc is not None and not self.kernel_died:
                info_msg = self.wait_for_reply(self.kc.kernel_info())
                if info_msg is not None:
                    self.nb.metadata["language_info"] = info_msg["content"]["language_info"]
            self.set_widgets_metadata()
        return self.nb
