"""Loads the extension into a kernel, bringing the host's own kernel-side code along.

The host sends this module's source in a silent request each time it connects (see
``progtc_kernel.host.injection``), so it runs before anything of this package may be
importable in the kernel, and imports only the standard library. It decides how the
kernel gets the ``progtc_kernel`` extension:

- already loaded: nothing to do (the comm's answer then says whether it speaks the
  host's protocol);
- installed in the kernel's environment with exactly the host's kernel-side files
  (the same fingerprint): that installation is loaded, the cheapest way;
- otherwise, unless the host was told not to: the host's kernel-side modules, sent
  with this source, become an in-memory ``progtc_kernel`` package for the kernel's
  lifetime, and that is loaded. Nothing is written to the kernel's disk; an
  installed ``progtc_kernel`` of another version is shadowed in that kernel only.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import linecache
import sys
import types
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PACKAGE = "progtc_kernel"


def fingerprint(files: Mapping[str, bytes]) -> str:
    """One hash of a set of ``{relative path: content}`` files, whatever their order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path] + b"\0")
    return digest.hexdigest()


def pack_sources(files: Mapping[str, bytes]) -> str:
    """The files as one compact ASCII string, to travel inside the load expression.
    (Base64, not the denser base85: Python decodes base85 in Python, 14 ms of the
    kernel's CPU for these files, and base64 in C, under one.)"""
    text = json.dumps({path: content.decode() for path, content in files.items()})
    return base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")


def unpack_sources(packed: str) -> dict[str, str]:
    sources: dict[str, str] = json.loads(zlib.decompress(base64.b64decode(packed)))
    return sources


class InjectedPackage(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``progtc_kernel`` and its kernel-side modules from source text.

    A name the host did not send (its host-side modules) is not found here, and so
    not found at all: the kernel side never needs them."""

    def __init__(self, sources: Mapping[str, str], version: str, digest: str) -> None:
        self.sources = dict(sources)
        self.progtc_kernel_digest = digest  # each load defines this class anew: see _injected
        self.prefix = f"<{PACKAGE} {version}, from the host>/"

    def _path_of(self, fullname: str) -> tuple[str, bool] | None:
        """The relative path of a module and whether it is a package."""
        if fullname != PACKAGE and not fullname.startswith(PACKAGE + "."):
            return None
        folder = "/".join(fullname.split(".")[1:])
        package_init = f"{folder}/__init__.py" if folder else "__init__.py"
        if package_init in self.sources:
            return package_init, True
        if f"{folder}.py" in self.sources:
            return f"{folder}.py", False
        return None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        found = self._path_of(fullname)
        if found is None:
            return None
        relative, is_package = found
        spec = importlib.machinery.ModuleSpec(
            fullname, self, origin=self.prefix + relative, is_package=is_package
        )
        spec.has_location = True  # tracebacks and __file__ name the module's path
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        found = self._path_of(module.__name__)
        assert found is not None, module.__name__
        source = self.sources[found[0]]
        filename = self.prefix + found[0]
        # Tracebacks through the injected code show its lines, as from a file.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module.__dict__["__injected__"] = True
        exec(compile(source, filename, "exec"), module.__dict__)


def installed_fingerprint(paths: Sequence[str]) -> str | None:
    """The fingerprint of the installed ``progtc_kernel``'s copies of ``paths``, or
    None when it is not installed (or lacks one of them)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        return fingerprint({path: (root / path).read_bytes() for path in paths})
    except OSError:
        return None


def _injected() -> list[Any]:
    """Packages injected by earlier loads (told by their marker: each load's class is
    a new one, so ``isinstance`` cannot tell)."""
    return [f for f in sys.meta_path if hasattr(f, "progtc_kernel_digest")]


def _forget_package() -> None:
    """Drop every imported ``progtc_kernel`` module and earlier injected copy, so the
    next import takes the injected code."""
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    for finder in _injected():
        sys.meta_path.remove(finder)


# Where a loaded extension lives: this release's module, and releases before 0.2's
# (whose kernel side was ``progtc_kernel.kernel``): a kernel that loaded either keeps it.
_EXTENSION_MODULES = (f"{PACKAGE}.kernel_side.extension", f"{PACKAGE}.kernel.extension")


def _extension_loaded() -> bool:
    """Whether a progtc_kernel extension (of any release) is loaded in this kernel."""
    return any(
        extension is not None and extension.current() is not None
        for extension in map(sys.modules.get, _EXTENSION_MODULES)
    )


def load_installed(ipython: Any, *, digest: str, paths: Sequence[str]) -> str:
    """Load the extension when it is loaded already or installed here with exactly the
    host's kernel-side files (``paths``, their fingerprint ``digest``); returns how
    ("loaded" or "installed").

    The pool's warm-up runs this from the installed copy first (an expression of one
    line, where the full load expression is ~75 KB for Python to compile), and sends
    the full one only when it raises: ``LookupError`` (or, from a kernel
    without this package or with a release without this function, ``ImportError``)."""
    if _extension_loaded():
        return "loaded"
    if _injected():
        raise LookupError(f"an injected {PACKAGE} is present: the full load expression decides")
    if installed_fingerprint(paths) != digest:
        raise LookupError(f"the installed {PACKAGE} is not the host's")
    ipython.extension_manager.load_extension(PACKAGE)
    return "installed"


def load(
    ipython: Any, *, version: str, digest: str, paths: Sequence[str], packed: str, inject: bool
) -> str:
    """Load the extension into this kernel; returns how: "loaded" (it already was),
    "installed" or "injected". ``paths``: the host's kernel-side files, ``digest``
    their fingerprint, ``packed`` their sources (unpacked only to be injected).
    ``inject``: whether the host may bring its own code.

    Raises ``ModuleNotFoundError`` when the kernel has no ``progtc_kernel`` and the
    host may not bring one."""
    if _extension_loaded():
        return "loaded"
    present = _injected()
    if present and present[0].progtc_kernel_digest == digest:
        how = "injected"  # injected earlier, then unloaded: load it again
    elif not present and installed_fingerprint(paths) == digest:
        how = "installed"
    elif inject:
        _forget_package()
        sys.meta_path.insert(0, InjectedPackage(unpack_sources(packed), version, digest))
        how = "injected"
    elif importlib.util.find_spec(PACKAGE) is None:
        raise ModuleNotFoundError(
            f"{PACKAGE} is not installed in this kernel's environment ({sys.executable}), "
            "and the host was told not to bring its own (extension='installed')",
            name=PACKAGE,
        )
    else:
        how = "installed"  # another version, as asked: its protocol check decides
    ipython.extension_manager.load_extension(PACKAGE)
    return how
