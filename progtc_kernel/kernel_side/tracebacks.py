"""Tracebacks that show the user's lines only, in every client of the kernel.

IPython hides frames that set ``__tracebackhide__``, but never the innermost one:
the frame that raised, which for a failed tool call is always one of ours (the call
that waited for the result raises its ``ToolError``; ``tools`` raises for a name it
does not serve). So the shell's ``showtraceback``, through which every traceback the
kernel sends goes (the cell's ``error`` output, the ``execute_reply``; JupyterLab,
nbclient, papermill, ``progtc-kernel attach`` alike), is wrapped to drop this
package's frames first, as ``ToolKernel`` drops them from its results. The frames of
the user's code and of any other library stay as IPython shows them.
"""

from __future__ import annotations

import sys
import types
from typing import Any

_PACKAGE = __name__.partition(".")[0]  # this package, under whichever name it loaded


def install(shell: Any) -> None:
    """Wrap ``shell.showtraceback`` (once) to drop this package's frames."""
    if getattr(shell.showtraceback, "_progtc_kernel", False):
        return
    original = shell.showtraceback

    def showtraceback(exc_tuple: Any = None, *args: Any, **kwargs: Any) -> Any:
        etype, value, tb = exc_tuple if exc_tuple is not None else sys.exc_info()
        if value is not None and tb is not None:
            tb = without_our_frames(tb)
            exc_tuple = (etype, value.with_traceback(tb), tb)
        return original(exc_tuple, *args, **kwargs)

    showtraceback._progtc_kernel = True  # type: ignore[attr-defined]
    shell.showtraceback = showtraceback


def uninstall(shell: Any) -> None:
    if getattr(shell.showtraceback, "_progtc_kernel", False):
        del shell.showtraceback  # the class's method again


def without_our_frames(tb: types.TracebackType) -> types.TracebackType | None:
    """The traceback without this package's frames."""
    kept = []
    entry: types.TracebackType | None = tb
    while entry is not None:
        if not _ours(entry.tb_frame):
            kept.append(entry)
        entry = entry.tb_next
    rebuilt = None
    for entry in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


def _ours(frame: types.FrameType) -> bool:
    module = str(frame.f_globals.get("__name__", ""))
    return module.partition(".")[0] == _PACKAGE
