"""Helper modules a client sends with its code: ``modules={"helpers": "def f(): ..."}``.

``install`` makes each importable by name in this kernel. A module runs when first
imported, as any module does, so it may ``from tools import ...``; its source is in
``linecache``, so tracebacks through it show its lines. Installing again replaces
what an earlier install offered.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import sys
import types
from collections.abc import Mapping, Sequence

from ..protocol import problem_with_module_name


class _SourceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads the helper modules from their source text."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = dict(sources)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.sources:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=f"<{fullname}>")

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        filename = f"<{module.__name__}>"
        source = self.sources[module.__name__]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), module.__dict__)


def install(sources: Mapping[str, str]) -> None:
    """Make each ``{name: source}`` importable, replacing earlier helper modules.

    A name that is not an identifier, is ``tools``, or is a module the kernel can
    import already (``json``, an installed package) is refused with ``ValueError``:
    shadowing it would break code that imports the real one."""
    for name in sources:
        if problem := problem_with_module_name(name):
            raise ValueError(problem)
    for finder in [f for f in sys.meta_path if isinstance(f, _SourceFinder)]:
        sys.meta_path.remove(finder)
        for name in finder.sources:
            sys.modules.pop(name, None)
    taken = sorted(name for name in sources if _importable(name))
    if taken:
        raise ValueError("Client module names conflicts with existing modules: " + ", ".join(taken))
    sys.meta_path.insert(0, _SourceFinder(sources))


def _importable(name: str) -> bool:
    try:
        return name in sys.modules or importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return True
