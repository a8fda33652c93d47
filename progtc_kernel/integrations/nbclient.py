"""Run a notebook whose cells call host tools, on nbclient.

    from progtc_kernel import execute_notebook

    nb = execute_notebook("report.ipynb", tools=[get_weather], parameters={"city": "Oslo"})
    nbformat.write(nb, "report-oslo.ipynb")

``ToolNotebookClient`` is an nbclient ``NotebookClient`` whose kernel serves host
tools: once the kernel's client is up, and before the first cell runs, a
``ToolBridge`` on the same kernel loads the progtc_kernel extension there (into a
kernel with nothing but ipykernel, the host brings its own kernel side) and serves
the tools until the kernel is shut down. The bridge runs on an
event loop and thread of its own, so tools answer however nbclient is driven:
``execute()``, ``async_execute()``, papermill's cell-by-cell calls, or
``execute()`` from a notebook whose loop is running.

Errors show in the executed notebook as any cell error does, and end the run as
nbclient does (unless ``allow_errors``): a failing tool call is the cell's
``ToolError`` traceback; a cell that outlives ``timeout`` is interrupted and gets a
``CellTimeoutError`` output after the kernel's ``KeyboardInterrupt``; a kernel that
dies gives the running cell a ``DeadKernelError`` output and always ends the run.
Each raises ``NotebookExecutionError``, an nbclient ``CellExecutionError`` that
carries the executed notebook and the failing cell's index; a timeout is also
nbclient's ``CellTimeoutError`` (``NotebookTimeoutError``), a dead kernel also
nbclient's ``DeadKernelError`` (``NotebookKernelDiedError``, a ``RuntimeError``), so
nbclient's hooks fire as they do for nbclient's own errors.

Kernels keep IPython's history in memory (``ipython_hist_file``, ``:memory:``), as
nbclient's ``python3`` kernels do, whatever their kernelspec is called.

Needs ``pip install "progtc-kernel[notebook]"`` (nbclient and nbformat).
"""

from __future__ import annotations

import ast
import keyword
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .._install import missing_extra

if TYPE_CHECKING:
    from jupyter_client.manager import KernelManager

try:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbclient.util import ensure_async, run_sync
    from nbformat import NotebookNode
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra("notebook", exc, "running notebooks needs nbclient and nbformat") from exc

from ..host.bridge import ToolBridge
from ..host.events import Event, ToolCallFinished
from ..host.results import ToolCallRecord
from ..host.threads import LoopThread
from ..host.tools import ToolRegistry, ToolsLike
from ..kernels.local import SPEC_NAME, single_spec
from ..timeouts import (
    DEFAULT_TOOL_CALL,
    NOTEBOOK_TIMEOUT,
    USE_DEFAULT,
    YEAR,
    Timeout,
    TimeoutLike,
    UseDefault,
    renamed,
    resolve,
    seconds,
    with_old_keywords,
)

__all__ = [
    "NotebookExecutionError",
    "NotebookKernelDiedError",
    "NotebookTimeoutError",
    "ToolNotebookClient",
    "execute_notebook",
    "inject_parameters",
]

INJECTED_TAG = "injected-parameters"


class NotebookExecutionError(CellExecutionError):
    """A cell failed, timed out or lost its kernel.

    It is nbclient's ``CellExecutionError`` (``str()`` shows the cell and its traceback),
    with the executed notebook attached.

    Attributes:
        traceback: The cell's traceback, as text.
        ename: The exception's class name.
        evalue: The exception's message.
        notebook: The executed notebook, with the failing cell's outputs.
        cell_index: The failing cell's position in the notebook.
    """

    def __init__(
        self,
        traceback: str,
        ename: str,
        evalue: str,
        *,
        notebook: NotebookNode | None = None,
        cell_index: int | None = None,
    ) -> None:
        """``traceback``, ``ename``, ``evalue``: as nbclient's ``CellExecutionError``.
        ``notebook``: the executed notebook. ``cell_index``: the failing cell's index."""
        super().__init__(traceback, ename, evalue)
        self.notebook = notebook
        self.cell_index = cell_index


class NotebookTimeoutError(NotebookExecutionError, CellTimeoutError):
    """A cell ran past its timeout: a ``NotebookExecutionError`` that is also
    nbclient's ``CellTimeoutError`` (a ``TimeoutError``)."""


class NotebookKernelDiedError(NotebookExecutionError, DeadKernelError):
    """The kernel died while a cell ran: a ``NotebookExecutionError`` that is also
    nbclient's ``DeadKernelError`` (a ``RuntimeError``: nbclient's
    ``on_notebook_error`` hook fires for it)."""


class ToolNotebookClient(NotebookClient):
    """An nbclient ``NotebookClient`` whose kernel serves ``tools`` to the cells.

    Everything nbclient offers works as usual (``execute()``, ``async_execute()``,
    hooks, ``kernel_name``, ``timeout``, ``allow_errors``...). Differences: a cell
    that outlives ``timeout`` is interrupted rather than left running
    (``interrupt_on_timeout`` defaults to true), every cell error is raised as
    ``NotebookExecutionError`` (and as the nbclient error it stands for), and IPython
    history stays in memory on every kernel. ``tool_calls`` lists the calls served so
    far; ``kernel_died`` says whether the kernel died while a cell ran.
    ``timeout_option``: how the caller gives a cell more time, named in the timeout
    error (``timeout=...``; ``progtc-kernel notebook`` and the papermill engine name
    their own flags).
    """

    timeout_option = "timeout=..."

    def __init__(
        self,
        nb: Any,
        km: KernelManager | None = None,
        *,
        tools: ToolsLike = None,
        tool_call_timeout: float | None = DEFAULT_TOOL_CALL,
        python: str | None = None,
        **options: Any,
    ) -> None:
        """``nb``: the notebook to run (an nbformat ``NotebookNode``; edited in place).
        ``km``: a jupyter_client kernel manager to use, as nbclient takes it.
        ``tools``: the host tools (functions, ``Tool`` objects, a dict of name to
        callable, or a ``ToolRegistry``). ``tool_call_timeout``: seconds a tool call
        may take (``None``: no limit; ``tool_timeout`` is its deprecated spelling).
        ``timeout`` and ``startup_timeout`` are nbclient's. ``python``: run the
        kernel on this interpreter, which needs ipykernel (default: the notebook's
        kernelspec, or ``kernel_name``). ``options``: ``NotebookClient`` options."""
        if python is not None and shutil.which(python) is None:
            raise ValueError(
                f"no Python interpreter at {python!r}: give the path of a Python "
                "executable (e.g. .venv/bin/python)"
            )
        if python is not None and options.get("kernel_name"):
            raise ValueError("give python (an interpreter) or kernel_name (a kernelspec), not both")
        options.setdefault("interrupt_on_timeout", True)
        if "tool_timeout" in options:
            tool_call_timeout = renamed(
                "tool_timeout", "tool_call_timeout=", options.pop("tool_timeout")
            )
        super().__init__(nb, km=km, **options)
        self.tools = ToolRegistry.of(tools)  # invalid tools fail here, before any kernel
        self.tool_call_timeout = seconds("tool_call_timeout", tool_call_timeout)
        self.python = python
        self.tool_calls: list[ToolCallRecord] = []
        self.kernel_died = False
        self._host: _ToolHost | None = None
        self._timed_out: str | None = None  # why the running cell was interrupted
        self._sockets: tempfile.TemporaryDirectory[str] | None = None

    # -- the kernel, with the tools served ---------------------------------------------

    def create_kernel_manager(self) -> Any:
        if self.python is None:
            km = super().create_kernel_manager()
        else:
            km = self.km = self.kernel_manager_class(
                kernel_spec_manager=single_spec(self.python),
                kernel_name=SPEC_NAME,
                config=self.config,
            )
        if os.name == "posix":
            # Unix sockets in a private folder, as ToolKernel's own kernels: no ports to
            # open, and no "unencrypted TCP" warning from ipykernel 7.
            self._sockets = tempfile.TemporaryDirectory(prefix="progtc-notebook-")
            km.transport = "ipc"
            km.ip = os.path.join(self._sockets.name, "kernel")
        return km

    async def async_start_new_kernel(self, **kwargs: Any) -> None:
        # nbclient keeps history in memory only for kernels named python3 (jupyter_client
        # guesses IPython by name); every kernel serving tools is IPython's, whatever
        # its kernelspec is called (the progtc one, python=, a user's venv kernel).
        has_history_file = any(
            argument.startswith("--HistoryManager.hist_file") for argument in self.extra_arguments
        )
        if self.ipython_hist_file and not has_history_file:
            self.extra_arguments = [
                *self.extra_arguments,
                f"--HistoryManager.hist_file={self.ipython_hist_file}",
            ]
        await super().async_start_new_kernel(**kwargs)

    async def async_start_new_kernel_client(self) -> Any:
        kc = await super().async_start_new_kernel_client()
        self._host = _ToolHost()
        try:
            await self._host.start(
                self.km,
                self.tools,
                tool_timeout=self.tool_call_timeout,
                timeout=self.startup_timeout,
                listener=self._on_tool_event,
            )
        except BaseException:
            await self._async_cleanup_kernel()
            raise
        return kc

    async def async_execute(self, reset_kc: bool = False, **kwargs: Any) -> NotebookNode:
        try:
            return await super().async_execute(reset_kc=reset_kc, **kwargs)
        finally:
            await self._close_host()  # a kernel given as km= keeps running, unserved

    async def _async_cleanup_kernel(self) -> None:
        if self.km is None:
            return  # cleaned up already (nbclient's exit hook outlives a failed start)
        try:
            await self._close_host()  # before the kernel goes: it says goodbye to the kernel
        finally:
            try:
                await super()._async_cleanup_kernel()
            finally:
                if self._sockets is not None:
                    self._sockets.cleanup()

    async def _close_host(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            await host.close()

    def _on_tool_event(self, parent_id: str | None, event: Event) -> None:
        if isinstance(event, ToolCallFinished):
            self.tool_calls.append(event.call)  # on the tools' thread: list.append is atomic

    # -- cells: errors in the notebook, raised with it -------------------------------

    async def async_execute_cell(
        self,
        cell: NotebookNode,
        cell_index: int,
        execution_count: int | None = None,
        store_history: bool = True,
    ) -> NotebookNode:
        self._timed_out = None
        try:
            return await super().async_execute_cell(
                cell, cell_index, execution_count, store_history
            )
        except DeadKernelError:
            self.kernel_died = True
            error = {
                "ename": "DeadKernelError",
                "evalue": (
                    f"the kernel died while this cell ran{_exit_status(self.km)}; the cells "
                    "after it were not run"
                ),
            }
            cell.outputs.append(_error_output(**error))
            failure = CellExecutionError.from_cell_and_msg(cell, _with_traceback(error))
            raise self._error(NotebookKernelDiedError, failure, cell_index) from None
        except NotebookExecutionError:
            raise
        except CellTimeoutError as exc:  # interrupt_on_timeout=False: nbclient's own
            failure = CellExecutionError(str(exc), "CellTimeoutError", str(exc))
            raise self._error(NotebookTimeoutError, failure, cell_index) from None
        except CellExecutionError as exc:
            kind = NotebookTimeoutError if self._timed_out else NotebookExecutionError
            raise self._error(kind, exc, cell_index) from None
        finally:
            if self._timed_out is not None:
                cell.outputs.append(_error_output("CellTimeoutError", self._timed_out))

    async def _async_handle_timeout(
        self, timeout: int, cell: NotebookNode | None = None
    ) -> dict[str, Any] | None:
        if not self.interrupt_on_timeout:
            return await super()._async_handle_timeout(timeout, cell)  # raises
        self._timed_out = (
            f"the cell ran longer than its timeout ({timeout} s) and was "
            f"interrupted; give it more time with {self.timeout_option}"
        )
        self.log.error("Cell timed out after %s s: interrupting the kernel", timeout)
        assert self.km is not None
        await ensure_async(self.km.interrupt_kernel())
        # The cell ends once its interrupted run goes idle, rather than waiting for a
        # reply from a kernel that may never give one.
        error = self.error_on_timeout or _with_traceback(
            {"ename": "CellTimeoutError", "evalue": self._timed_out}
        )
        return {"content": {**error, "status": "error"}}

    def _error(
        self, kind: type[NotebookExecutionError], exc: CellExecutionError, cell_index: int
    ) -> NotebookExecutionError:
        return kind(exc.traceback, exc.ename, exc.evalue, notebook=self.nb, cell_index=cell_index)

    # nbclient's blocking methods wrap its own coroutines: wrap ours instead.
    execute = run_sync(async_execute)
    start_new_kernel = run_sync(async_start_new_kernel)
    start_new_kernel_client = run_sync(async_start_new_kernel_client)
    _cleanup_kernel = run_sync(_async_cleanup_kernel)
    execute_cell = run_sync(async_execute_cell)


def execute_notebook(
    notebook: NotebookNode | str | os.PathLike[str],
    tools: ToolsLike = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    python: str | None = None,
    kernel_name: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: TimeoutLike = USE_DEFAULT,
    tool_timeout: float | UseDefault | None = USE_DEFAULT,
    startup_timeout: float | UseDefault | None = USE_DEFAULT,
    allow_errors: bool = False,
    **options: Any,
) -> NotebookNode:
    """Run a notebook on a fresh kernel whose ``tools`` module calls ``tools``, and return
    the executed notebook (an nbformat object given is edited in place).

    It is nbclient (``ToolNotebookClient``): hooks and other ``NotebookClient`` options
    work as usual, and errors are nbclient's classes.

    Example:
        ```python
        nb = execute_notebook("report.ipynb", tools=[get_weather], parameters={"city": "Oslo"})
        nbformat.write(nb, "report-oslo.ipynb")
        ```

    Args:
        notebook: A ``.ipynb`` path or an nbformat ``NotebookNode``.
        tools: The host tools (see ``ToolRegistry``).
        parameters: Values to set, as papermill does: a cell assigning them (tagged
            ``injected-parameters``) goes after the cell tagged ``parameters``, or
            first. Values are Python literals (str, int, float, bool, None, lists and
            dicts of them).
        python: The kernel's interpreter (it needs only ipykernel).
        kernel_name: A kernelspec instead; default: the notebook's.
        cwd: The kernel's working directory; default: the notebook's folder for a path,
            else this process's.
        timeout: Seconds a cell may run before it is interrupted (default and ``None``:
            no limit, as nbclient), or a ``Timeout`` that also sets how long a tool call
            (default 10 s) and the kernel's start (60 s) may take.
        tool_timeout: Deprecated: give ``Timeout(tool_call=...)`` as ``timeout``.
        startup_timeout: Deprecated: give ``Timeout(start=...)`` as ``timeout``.
        allow_errors: Run every cell and return the notebook with its errors instead of
            raising at the first one (a dead kernel still ends the run).
        **options: Other ``NotebookClient`` options.

    Returns:
        The executed notebook.

    Raises:
        NotebookExecutionError: A cell failed (``NotebookTimeoutError``: it ran past its
            timeout; ``NotebookKernelDiedError``: the kernel died); ``.notebook`` has
            the notebook up to that cell, the error included.
        ToolDefinitionError: A function cannot be a tool.
        ExtensionNotLoadedError: The kernel cannot load the extension.
    """
    if isinstance(notebook, NotebookNode):
        nb, path = notebook, None
    else:
        path = Path(notebook)
        nb = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    folder = cwd if cwd is not None else path.resolve().parent if path is not None else None
    resources = {"metadata": {"path": os.fspath(folder)}} if folder is not None else {}
    limits = with_old_keywords(
        resolve(timeout, NOTEBOOK_TIMEOUT),
        tool_timeout=tool_timeout,
        startup_timeout=startup_timeout,
    )
    client = ToolNotebookClient(
        nb,
        tools=tools,
        tool_call_timeout=limits.tool_call,
        python=python,
        kernel_name=kernel_name or "",
        **nbclient_timeouts(limits),
        allow_errors=allow_errors,
        resources=resources,
        **options,
    )
    return client.execute()


def inject_parameters(nb: NotebookNode, parameters: Mapping[str, Any]) -> None:
    """Set ``parameters`` (a dict of name to value) in the notebook ``nb`` as papermill
    does: a code cell tagged ``injected-parameters`` that assigns them, after the cell
    tagged ``parameters`` (or first), in place of an injected cell already there.
    Values must be Python literals (str, int, float, bool, None, and lists, tuples and
    dicts of them)."""
    lines = ["# Parameters"]
    for name, value in parameters.items():
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"parameter name {name!r} is not a Python variable name")
        source = repr(value)
        try:
            ast.literal_eval(source)
        except (ValueError, SyntaxError):
            raise ValueError(
                f"parameter {name!r}: {type(value).__name__} values cannot be written in a "
                "cell; give a str, int, float, bool, None, or a list or dict of those"
            ) from None
        lines.append(f"{name} = {source}")
    cell = nbformat.v4.new_code_cell("\n".join(lines) + "\n", metadata={"tags": [INJECTED_TAG]})
    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    tagged = [
        i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    cells.insert(tagged[-1] + 1 if tagged else 0, cell)
    nb.cells = cells


class NbclientTimeouts(TypedDict):
    """nbclient's two timeout traits, as ``NotebookClient`` takes them."""

    timeout: int | None
    startup_timeout: int


def nbclient_timeouts(limits: Timeout) -> NbclientTimeouts:
    """A ``Timeout``'s run and start as nbclient takes them: whole seconds (rounded up),
    where a start with no limit is a year (nbclient's start timeout has no "none")."""
    return {
        "timeout": None if limits.run is None else math.ceil(limits.run),
        "startup_timeout": math.ceil(YEAR if limits.start is None else limits.start),
    }


class _ToolHost:
    """A ``ToolBridge`` on an event loop and thread of its own, so that tool calls
    are answered whichever loop nbclient runs (its own, a runner thread's when the
    caller's loop is busy, or papermill's cell-by-cell ones, idle between cells)."""

    def __init__(self) -> None:
        self._loop_thread = LoopThread("progtc-kernel-notebook-tools")
        self._bridge: ToolBridge | None = None

    async def start(
        self,
        km: Any,
        tools: ToolRegistry,
        *,
        tool_timeout: float | None,
        timeout: float | None,
        listener: Any,
    ) -> None:
        async def start() -> None:
            # Built on its loop: the bridge owns asyncio primitives and sockets there.
            bridge = self._bridge = ToolBridge(km, tools, tool_call_timeout=tool_timeout)
            bridge.add_tool_listener(listener)
            await bridge.start(timeout=timeout)

        await self._loop_thread.run(start())

    async def close(self) -> None:
        try:
            if self._bridge is not None:
                await self._loop_thread.run(self._bridge.close())
        finally:
            # Stopping takes one loop turn (the bridge's tasks are done): no executor,
            # which would fail in nbclient's exit hook, once Python is shutting down.
            self._loop_thread.stop(timeout=10)


def _exit_status(km: Any) -> str:
    process = getattr(getattr(km, "provisioner", None), "process", None)
    code = process.poll() if process is not None else None
    if code is None:
        return ""
    return f" (killed by signal {-code})" if code < 0 else f" (exit code {code})"


def _with_traceback(error: dict[str, str]) -> dict[str, Any]:
    return {**error, "traceback": [f"{error['ename']}: {error['evalue']}"]}


def _error_output(ename: str, evalue: str) -> NotebookNode:
    output: NotebookNode = nbformat.v4.new_output(
        "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
    )
    return output
