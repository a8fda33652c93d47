"""The expression that loads the extension into a kernel, carrying the kernel side.

A kernel needs nothing but ipykernel: the expression (one of a silent
``execute_request``'s ``user_expressions``) holds ``kernel_side/bootstrap.py`` and the
host's own kernel-side modules (``kernel_side/``, ``protocol.py``, ``_wire.py``,
``exceptions.py``...), compressed. The bootstrap loads an installed copy when it is
exactly these files, and otherwise makes them an in-memory package for the kernel's
lifetime (see its docstring). Host and kernel therefore always run the same kernel
code, unless the kernel had another version loaded already; that one answers the
comm with its protocol version, and a different one is a ``ProtocolMismatchError``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from .._version import __version__
from ..kernel_side import bootstrap

#: How a host gets the extension into a kernel:
#: ``"inject"`` loads an installed copy of the same files, else brings its own;
#: ``"installed"`` loads only what the kernel's environment has installed;
#: ``"loaded"`` sends nothing: the kernel loaded it at start (a kernelspec with
#: ``--ext=progtc_kernel``, a profile, ``progtc-kernel serve``'s pool).
ExtensionPolicy = Literal["inject", "installed", "loaded"]
EXTENSION_POLICIES: tuple[ExtensionPolicy, ...] = ("inject", "installed", "loaded")

PACKAGE_NAME = bootstrap.PACKAGE
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Every module the kernel side imports, relative to the package (a test checks that
# a kernel with only ipykernel imports nothing beyond them).
_KERNEL_SIDE = (
    "__init__.py",
    "_version.py",
    "_python.py",
    "protocol.py",
    "_wire.py",
    "_stubs.py",
    "exceptions.py",
)


def kernel_side_files() -> dict[str, bytes]:
    """The kernel-side source files, by path relative to the package."""
    side = _PACKAGE_DIR / "kernel_side"
    paths = [*_KERNEL_SIDE, *(f"kernel_side/{p.name}" for p in side.glob("*.py"))]
    return {path: (_PACKAGE_DIR / path).read_bytes() for path in sorted(paths)}


#: The name the load expression has in an ``execute_request``'s ``user_expressions``.
LOAD_KEY = "progtc_kernel"


@functools.cache
def load_expression(inject: bool) -> str:
    """The expression that loads the extension, carrying the kernel side (built once
    per process).

    Why an expression and not a cell: ipykernel hashes a cell's code in pure Python
    (its debugger's file name for it) and IPython tokenizes it; for these ~75 KB that
    was 50-60 ms of the kernel's start. An expression of ``user_expressions`` is
    compiled by Python alone, and its failure comes back in the reply, not on iopub
    where every client would see a traceback."""
    files = kernel_side_files()
    arguments = (
        f"version={__version__!r}, digest={bootstrap.fingerprint(files)!r}, "
        f"paths={sorted(files)!r}, packed={bootstrap.pack_sources(files)!r}, inject={inject!r}"
    )
    source = Path(bootstrap.__file__).read_text()
    # Run in a namespace of its own: the user's namespace gains and loses nothing.
    return (
        f"(lambda ns: exec(compile({source!r}, '<progtc_kernel bootstrap>', 'exec'), ns)"
        f" or ns['load'](get_ipython(), {arguments}))"
        f"({{'__name__': 'progtc_kernel_bootstrap'}})"
    )


@functools.cache
def quick_load_expression() -> str:
    """An expression of one line that loads the kernel's installed copy of the
    extension when it is exactly the host's kernel-side files (else it fails, and the
    host sends ``load_expression``): what a kernel forked from a template that imported
    the extension runs in a millisecond, where the full one costs it several."""
    files = kernel_side_files()
    return (
        f"__import__({PACKAGE_NAME + '.kernel_side.bootstrap'!r}, fromlist=['load_installed'])"
        f".load_installed(get_ipython(), digest={bootstrap.fingerprint(files)!r}, "
        f"paths={sorted(files)!r})"
    )


def load_request(expression: str) -> dict[str, Any]:
    """A silent ``execute_request``'s content that evaluates ``expression``."""
    return {
        "code": "",
        "silent": True,
        "store_history": False,
        "user_expressions": {LOAD_KEY: expression},
        "allow_stdin": False,
        "stop_on_error": False,
    }


def load_outcome(reply: dict[str, Any]) -> dict[str, Any]:
    """How loading went, from the ``execute_reply``'s content: ``status`` ("ok",
    "error", or the reply's own, such as "aborted"), and ``ename``/``evalue`` of an
    error."""
    outcome = (reply.get("user_expressions") or {}).get(LOAD_KEY)
    return outcome if isinstance(outcome, dict) else reply


def check_policy(extension: str) -> ExtensionPolicy:
    if extension not in EXTENSION_POLICIES:
        raise ValueError(
            f"extension={extension!r}: use one of " + ", ".join(repr(p) for p in EXTENSION_POLICIES)
        )
    return extension
