"""The ``tools`` module kernel code imports: one function per host tool.

Each function carries the host tool's real signature and docstring. Whether a call
returns an awaitable or blocks is decided by where it is written (``RULE``):
progtc-style code (``c = get_weather(...)`` in one statement, ``await c`` in
another; ``asyncio.create_task(get_weather(...))``) runs unchanged, and a plain
``def run():`` can call tools without ``await``.
"""

from __future__ import annotations

import inspect
import linecache
import sys
import types
import warnings
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from .. import _python
from .._stubs import short_name
from ..exceptions import TOOL_EXCEPTIONS, HostDisconnectedError, ToolArgumentError, ToolError
from ..protocol import ToolSpec, signature_of
from .catalog import Catalog

if TYPE_CHECKING:
    from .bridge import KernelBridge, PendingCall

RULE = (
    "A tool call returns an awaitable wherever `await` can be written - in "
    "`async def` code and anywhere in a cell that uses `await` at its top level - "
    "and blocks and returns the result everywhere else: in plain `def` functions "
    "(however they are reached), in threads, and in cells without `await`."
)

_NO_HOST = (
    "no host is serving tools to this kernel; connect one with "
    "progtc_kernel.ToolKernel or progtc_kernel.ToolBridge"
)
_NO_TOOLS = (
    "the host serves no tools; give it some: tools=[...] in Python (ToolKernel, "
    "ToolBridge, execute_notebook...) or --tools MODULE_OR_FILE on the command line"
)

BridgeFor = Callable[[str], "KernelBridge"]
Hosts = Callable[[], "list[KernelBridge]"]

# -- where a call is written: the RULE ----------------------------------------------


def awaitable_wanted(frame: types.FrameType | None) -> bool:
    """Whether the calling code can ``await`` (see ``RULE``).

    Comprehensions, generator expressions and lambdas count as the code around them.
    Module-level code is a cell's: it can await when its cell awaits anywhere at
    the top level (IPython compiles such a cell statement by statement, so the
    statement's own code object cannot tell)."""
    frame = _python.frame_written_in(frame)
    if frame is None:
        return False
    code = frame.f_code
    if _python.can_await(code):
        return True
    return _python.is_module_level(code) and _cell_awaits(code.co_filename)


_AWAITING_CELLS: dict[str, tuple[list[str], bool]] = {}


def _cell_awaits(filename: str) -> bool:
    """Whether the source IPython cached for this cell has a top-level ``await``."""
    lines = linecache.getlines(filename)
    known = _AWAITING_CELLS.get(filename)
    if known is not None and known[0] is lines:
        return known[1]
    awaits = _python.awaits_at_top_level("".join(lines), filename)
    if len(_AWAITING_CELLS) > 256:
        _AWAITING_CELLS.clear()
    _AWAITING_CELLS[filename] = (lines, awaits)
    return awaits


# -- awaitable calls ----------------------------------------------------------------


class ToolCall(Coroutine[Any, Any, Any]):
    """A tool call in async code: nothing is sent until it is awaited or run as a task.

    It behaves like the coroutine of an ``async def`` tool: ``await`` it,
    ``asyncio.gather`` it, or ``asyncio.create_task`` it. Used as if it were the
    result, it raises an error that states ``RULE``; dropped without being awaited,
    it warns, pointing at the line that made it."""

    __slots__ = ("_bridge", "_call", "_closed", "_coroutine", "_where")

    def __init__(self, bridge: KernelBridge, call: PendingCall, where: tuple[str, int]) -> None:
        self._bridge = bridge
        self._call = call
        self._where = where
        self._coroutine: Coroutine[Any, Any, Any] | None = None
        self._closed = False

    @property
    def _name(self) -> str:
        return f"tools.{self._call.tool}"

    def _begin(self) -> Coroutine[Any, Any, Any]:
        if self._coroutine is None:
            self._coroutine = self._bridge.call_async(self._call)
        return self._coroutine

    def __await__(self) -> Generator[Any, None, Any]:
        if self._coroutine is not None:
            raise RuntimeError(
                f"this {self._name}(...) call was already awaited; call the "
                "tool again for a new result"
            )
        return self._begin().__await__()

    def send(self, value: Any) -> Any:
        return self._begin().send(value)

    def throw(self, *exc: Any) -> Any:
        return self._begin().throw(*exc)

    def close(self) -> None:
        self._closed = True
        if self._coroutine is not None:
            self._coroutine.close()

    def __del__(self) -> None:
        if self._coroutine is None and not self._closed:
            filename, line = self._where
            warnings.warn_explicit(
                f"{self._name}(...) was never awaited, so it was never sent to the host. "
                f"{RULE} Write `await {self._name}(...)`.",
                RuntimeWarning,
                filename,
                line,
                registry={},
            )

    def __repr__(self) -> str:
        state = "not awaited yet" if self._coroutine is None else "awaited"
        return f"<awaitable {self._name}(...) call, {state}>"

    def _misused(self, what: str) -> TypeError:
        return TypeError(
            f"{self._name}(...) returned an awaitable here, not its result, so it has no "
            f"{what}. {RULE} Write `await {self._name}(...)` (several calls: "
            f"`await asyncio.gather(...)`)."
        )

    def __getattr__(self, name: str) -> Any:
        if name in ("__name__", "__qualname__"):
            return self._name
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(str(self._misused(f"attribute {name!r}"))) from None

    def __str__(self) -> str:
        raise self._misused("text")

    def __format__(self, spec: str) -> str:
        raise self._misused("text")

    def __bool__(self) -> bool:
        raise self._misused("truth value")

    def __iter__(self) -> Any:
        raise self._misused("items to iterate over")

    def __len__(self) -> int:
        raise self._misused("length")

    def __getitem__(self, key: Any) -> Any:
        raise self._misused("items")

    def __contains__(self, item: Any) -> bool:
        raise self._misused("items")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ToolCall):  # asyncio keeps calls in sets and lists
            return self is other
        raise self._misused("value to compare")

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = object.__hash__


def _misuse(what: str) -> Callable[..., Any]:
    def misused(self: ToolCall, *args: Any) -> Any:
        raise self._misused(what)

    return misused


# Everything else a result could be used for: arithmetic, comparisons, conversions,
# calls, item assignment, ``with`` and ``async for``. Each raises a TypeError that
# states RULE and the fix, instead of "unsupported operand type(s) ... 'ToolCall'".
_MISUSES = {
    "value to compute with": [
        f"__{prefix}{op}__"
        for op in (
            "add",
            "sub",
            "mul",
            "matmul",
            "truediv",
            "floordiv",
            "mod",
            "divmod",
            "pow",
            "lshift",
            "rshift",
            "and",
            "xor",
            "or",
        )
        for prefix in ("", "r", "i")
        if (prefix, op) != ("i", "divmod")
    ]
    + [
        "__neg__",
        "__pos__",
        "__abs__",
        "__invert__",
        "__round__",
        "__trunc__",
        "__floor__",
        "__ceil__",
    ],
    "value to compare": ["__lt__", "__le__", "__gt__", "__ge__"],
    "number value": ["__int__", "__float__", "__complex__", "__index__"],
    "items": ["__setitem__", "__delitem__", "__reversed__", "__aiter__"],
    "function to call": ["__call__"],
    "context to enter": ["__enter__", "__exit__", "__aenter__", "__aexit__"],
}
for _what, _methods in _MISUSES.items():
    for _method in _methods:
        setattr(ToolCall, _method, _misuse(_what))


def make_tool_function(name: str, spec: ToolSpec | None, bridge_for: BridgeFor) -> Any:
    """The function kernel code calls for tool ``name``; ``bridge_for`` picks the host
    of each call. ``spec``: the tool as a host describes it (signature, docstring,
    schemas), or None for a name no host serves yet: its calls then take the
    signature of the host that serves it by the time they are made."""
    known = signature_of(spec) if spec is not None else None

    def tool(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        signature = known if known is not None else _signature_served(name, bridge_for)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolArgumentError(
                name, "TypeError", f"{exc}; the signature is {name}{signature}"
            ) from None
        arguments = {k: list(v) if isinstance(v, tuple) else v for k, v in bound.arguments.items()}
        bridge = bridge_for(name)
        caller = _python.caller()
        if awaitable_wanted(caller):
            call = bridge.new_call(name, arguments)
            return ToolCall(bridge, call, (caller.f_code.co_filename, caller.f_lineno))
        return bridge.call_blocking(bridge.new_call(name, arguments))

    tool.__name__ = tool.__qualname__ = short_name(name)
    namespace = name.rpartition(".")[0]
    tool.__module__ = f"tools.{namespace}" if namespace else "tools"
    if spec is not None:
        tool.__doc__ = spec["description"]
        tool.__signature__ = known  # type: ignore[attr-defined]
        tool.input_schema = spec["input_schema"]  # type: ignore[attr-defined]
        tool.output_schema = spec["output_schema"]  # type: ignore[attr-defined]
    return tool


def _signature_served(name: str, bridge_for: BridgeFor) -> inspect.Signature:
    __tracebackhide__ = True
    bridge = bridge_for(name)
    spec = bridge.tools.get(name)
    if spec is None:
        raise ToolError(
            name, "LookupError", _no_tool(f"no tool named {name!r}", sorted(bridge.tools))
        )
    return signature_of(spec)


def _no_tool(what: str, served: list[str]) -> str:
    """``what`` ("no tool named 'x'"), and what is served instead (or how to serve)."""
    if not served:
        return f"{what}: {_NO_TOOLS}"
    return f"{what}; available tools: {', '.join(served)}"


class ToolsModule(types.ModuleType):
    """``sys.modules["tools"]``: attributes are the tools the connected hosts serve.

    The module's own attributes are dunders and ``RESERVED_TOOL_NAMES`` only (its
    state lives in ``__progtc__``), so that every other name reaches ``__getattr__``
    and is a tool: a tool named ``describe`` or ``_hosts`` is callable like any
    other, and hosts refuse tools with the reserved names.

    ``hosts()`` lists the hosts in the order calls prefer them (see the extension).
    A name is looked up in that order, and each call goes to the first host that
    serves its tool when it is made (or, if none does, to the first host, which
    answers that it has no such tool). With no host connected, ``tools.x`` and
    ``from tools import x`` still work, and calling ``x`` raises
    ``HostDisconnectedError`` naming ``x`` until a host serving ``x`` connects."""

    def __init__(self, hosts: Hosts) -> None:
        super().__init__("tools", _module_doc([]))
        self.__progtc__ = _Tools(hosts)
        for exception in TOOL_EXCEPTIONS:
            setattr(self, exception.__name__, exception)
        self.catalog = Catalog(self.__progtc__.specs, self.__progtc__.asks_approval)

    def __getattr__(self, name: str) -> Any:
        __tracebackhide__ = True
        if name == "__all__":  # for ``from tools import *``
            return [*self.__progtc__.flat(), *_EXCEPTION_NAMES]
        if _is_dunder(name):
            raise AttributeError(name)
        namespace = self.__progtc__.namespaces.get(name)
        if namespace is not None and name in self.__progtc__.served_namespaces():
            return namespace
        # ``from tools import x`` would swap an AttributeError for a bare ImportError.
        importing = _python.importing_from(_python.caller())
        return self.__progtc__.function(name, importing)

    def __dir__(self) -> list[str]:
        tools = self.__progtc__
        return sorted([*tools.flat(), *tools.served_namespaces(), *_EXCEPTION_NAMES, "catalog"])


class NamespaceModule(types.ModuleType):
    """``tools.github`` (``sys.modules["tools.github"]``): the tools of one named
    upstream, so that ``from tools.github import search_issues`` works. Its calls
    travel as ``github.search_issues``."""

    def __init__(self, name: str, tools: _Tools) -> None:
        super().__init__(f"tools.{name}", f"Tools of the {name!r} namespace.")
        self.__progtc__ = tools
        self.__progtc_namespace__ = name

    def __getattr__(self, name: str) -> Any:
        __tracebackhide__ = True
        prefix = f"{self.__progtc_namespace__}."
        if name == "__all__":
            return [short_name(n) for n in self.__progtc__.served() if n.startswith(prefix)]
        if _is_dunder(name):
            raise AttributeError(name)
        importing = _python.importing_from(_python.caller())
        return self.__progtc__.function(prefix + name, importing)

    def __dir__(self) -> list[str]:
        return list(self.__getattr__("__all__"))


def describe(module: ToolsModule) -> None:
    """Refresh ``help(tools)`` for the tools now served, and the namespace modules
    (``tools.github``) in ``sys.modules``, so that ``from tools.github import x``
    finds them."""
    tools = module.__progtc__
    module.__doc__ = _module_doc(tools.served())
    for name in tools.served_namespaces():
        namespace = tools.namespaces.get(name)
        if namespace is None:
            namespace = tools.namespaces[name] = NamespaceModule(name, tools)
        if sys.modules.get("tools") is module:
            sys.modules[f"tools.{name}"] = namespace


class _Tools:
    """What the ``tools`` module knows: the hosts, and the functions made for them."""

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts
        self.offline: dict[str, Any] = {}
        self.namespaces: dict[str, NamespaceModule] = {}

    def bridge_for(self, tool: str) -> KernelBridge:
        __tracebackhide__ = True
        hosts = self.hosts()
        if not hosts:
            raise HostDisconnectedError(tool, "HostDisconnectedError", _NO_HOST)
        return next((bridge for bridge in hosts if tool in bridge.tools), hosts[0])

    def served(self) -> list[str]:
        return sorted({name for bridge in self.hosts() for name in bridge.tools})

    def flat(self) -> list[str]:
        """The tools outside namespaces: ``tools.<name>``."""
        return [name for name in self.served() if "." not in name]

    def served_namespaces(self) -> list[str]:
        return sorted({name.partition(".")[0] for name in self.served() if "." in name})

    def specs(self) -> dict[str, ToolSpec]:
        """Every tool served, as the host that calls prefer describes it."""
        specs: dict[str, ToolSpec] = {}
        for bridge in self.hosts():
            for name, spec in bridge.tools.items():
                specs.setdefault(name, spec)
        return dict(sorted(specs.items()))

    def asks_approval(self) -> frozenset[str]:
        return frozenset(name for bridge in self.hosts() for name in bridge.asks_approval)

    def function(self, name: str, importing: bool) -> Any:
        __tracebackhide__ = True
        hosts = self.hosts()
        if not hosts:
            return self.offline_tool(name)
        bridge = next((bridge for bridge in hosts if name in bridge.tools), None)
        if bridge is None:
            message = _no_tool(f"module 'tools' has no tool {name!r}", self.served())
            raise (ImportError(message, name="tools") if importing else AttributeError(message))
        function = bridge.functions.get(name)
        if function is None:
            function = bridge.functions[name] = make_tool_function(
                name, bridge.tools[name], self.bridge_for
            )
        return function

    def offline_tool(self, name: str) -> Any:
        """A tool imported while no host is connected: it is served by whichever host
        serves it when it is called."""
        function = self.offline.get(name)
        if function is None:
            function = self.offline[name] = make_tool_function(name, None, self.bridge_for)
        return function


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


_EXCEPTION_NAMES = [exception.__name__ for exception in TOOL_EXCEPTIONS]


def _module_doc(tools: list[str]) -> str:
    served = ", ".join(sorted(tools)) if tools else "none yet (no host is connected)"
    return (
        "Tools served by the host application (progtc_kernel).\n\n"
        f"Tools: {served}.\n\n{RULE}\n\n"
        "    w = await tools.get_weather('Oslo', 'NO')           # in a cell that awaits\n"
        "    ws = await asyncio.gather(*[tools.get_weather(c, 'FR') for c in cities])\n"
        "    def run():\n"
        "        return tools.get_weather('Oslo', 'NO')          # blocks: a plain def\n\n"
        "A failed call raises ToolError (ToolArgumentError, ToolTimeoutError, "
        "HostDisconnectedError, ToolDeniedError: a call that needed approval was "
        "denied), all importable from here."
    )
