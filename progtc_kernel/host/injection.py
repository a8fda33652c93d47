"""The cell that loads the extension into a kernel, carrying the kernel-side code.

A kernel needs nothing but ipykernel: the cell holds ``kernel/bootstrap.py`` and the
host's own kernel-side modules (``kernel/``, ``protocol.py``, ``_wire.py``,
``exceptions.py``), compressed. The bootstrap loads an installed copy when it is
exactly these files, and otherwise makes them an in-memory package for the kernel's
lifetime (see its docstring). Host and kernel therefore always run the same kernel
code, unless the kernel had another version loaded already; that one answers the
comm with its protocol version, and a different one is a ``ProtocolMismatchError``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

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


@functools.cache
def load_cell(inject: bool) -> str:
    """The silent cell that loads the extension (built once per process)."""
    files = kernel_side_files()
    arguments = (
        f"version={__version__!r}, digest={bootstrap.fingerprint(files)!r}, "
        f"packed={bootstrap.pack_sources(files)!r}, inject={inject!r}"
    )
    source = Path(bootstrap.__file__).read_text()
    # Run in a namespace of its own: the user's namespace gains and loses nothing.
    return (
        f"exec(compile({source!r}, '<progtc_kernel bootstrap>', 'exec'), "
        f"_progtc_kernel_ns := {{'__name__': 'progtc_kernel_bootstrap'}})\n"
        f"try:\n"
        f"    _progtc_kernel_ns['load'](get_ipython(), {arguments})\n"
        f"finally:\n"
        f"    del _progtc_kernel_ns\n"
    )


@functools.cache
def quick_load_cell() -> str:
    """A one-line silent cell that loads the kernel's installed copy of the extension
    when it is exactly the host's kernel-side files (else it fails, and the host sends
    ``load_cell``): what a kernel forked from a template that imported the extension
    runs in a millisecond, where the full cell costs it tens (hashed and tokenized)."""
    files = kernel_side_files()
    return (
        f"__import__({PACKAGE_NAME + '.kernel_side.bootstrap'!r}, fromlist=['load_installed'])"
        f".load_installed(get_ipython(), digest={bootstrap.fingerprint(files)!r}, "
        f"paths={sorted(files)!r})\n"
    )


def check_policy(extension: str) -> ExtensionPolicy:
    if extension not in EXTENSION_POLICIES:
        raise ValueError(
            f"extension={extension!r}: use one of " + ", ".join(repr(p) for p in EXTENSION_POLICIES)
        )
    return extension
