"""The ``tools`` module kernel code imports: one function per host tool.

Each function carries the host tool's real signature and docstring. How a call
behaves depends on where it is written:

* in ``async def`` code or at the top level of a cell that uses ``await``, it
  returns an awaitable: ``await get_weather("Paris")``, ``asyncio.gather(...)``;
* in plain ``def`` code (or a cell without ``await``), it blocks and returns the
  result: ``def run(): return get_weather("Paris")``.

Comprehensions, generator expressions and lambdas count as the code around them,
so ``asyncio.gather(*[get_weather(c) for c in cities])`` works as written.
"""

from __future__ import annotations

import dis
import inspect
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import HostDisconnectedError, ToolArgumentError, ToolError
from ..protocol import ToolSpec

if TYPE_CHECKING:
    from .bridge import KernelBridge

_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
_IMPORT_FROM = dis.opmap["IMPORT_FROM"]
_TRANSPARENT = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>", "<lambda>"})
_KINDS = {
    "positional_only": inspect.Parameter.POSITIONAL_ONLY,
    "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "var_positional": inspect.Parameter.VAR_POSITIONAL,
    "keyword_only": inspect.Parameter.KEYWORD_ONLY,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}


_NO_HOST = ("no host is serving tools to this kernel; connect one with "
            "progtc_kernel.ToolKernel or progtc_kernel.ToolBridge")


class _Source:
    """Shows as the source text it holds: ``city: str = 'Paris'`` in signatures."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_of(spec: ToolSpec) -> inspect.Signature:
    parameters = [
        inspect.Parameter(
            p["name"],
            _KINDS[p["kind"]],
            default=(inspect.Parameter.empty if p["default_repr"] is None
                     else _Source(p["default_repr"])),
            annotation=(inspect.Parameter.empty if p["annotation"] is None
                        else _Source(p["annotation"])),
        )
        for p in spec["parameters"]
    ]
    returns = spec["returns"]
    return inspect.Signature(
        parameters, return_annotation=inspect.Signature.empty if returns is None
        else _Source(returns))


def called_from_async(frame: types.FrameType | None) -> bool:
    """Whether the calling code can ``await`` (see the module docstring)."""
    while frame is not None and frame.f_code.co_name in _TRANSPARENT:
        frame = frame.f_back
    return frame is not None and bool(frame.f_code.co_flags & _ASYNC_FLAGS)


def make_tool_function(spec: ToolSpec, bridge_for: Callable[[], KernelBridge]) -> Any:
    name = spec["name"]
    signature = signature_of(spec)

    def tool(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolArgumentError(name, "TypeError", str(exc)) from None
        arguments = {k: list(v) if isinstance(v, tuple) else v
                     for k, v in bound.arguments.items()}
        bridge = bridge_for()
        if called_from_async(sys._getframe(1)):
            return bridge.call_async(name, arguments)
        return bridge.call_blocking(name, arguments)

    tool.__name__ = tool.__qualname__ = name
    tool.__module__ = "tools"
    tool.__doc__ = spec["description"]
    tool.__signature__ = signature  # type: ignore[attr-defined]
    tool.input_schema = spec["input_schema"]  # type: ignore[attr-defined]
    tool.output_schema = spec["output_schema"]  # type: ignore[attr-defined]
    return tool


class ToolsModule(types.ModuleType):
    """``sys.modules["tools"]``: attributes are the tools of the current host."""

    def __init__(self, current_bridge: Callable[[], KernelBridge | None]) -> None:
        super().__init__("tools", "Tools served by the host application (progtc_kernel).")
        self._current_bridge = current_bridge
        self.ToolError = ToolError

    def _bridge(self) -> KernelBridge:
        bridge = self._current_bridge()
        if bridge is None:
            raise HostDisconnectedError("tools", "HostDisconnectedError", _NO_HOST)
        return bridge

    def __getattr__(self, name: str) -> Any:
        bridge = self._current_bridge()
        if name == "__all__":  # for ``from tools import *``
            return sorted(bridge.tools if bridge else ())
        if name.startswith("__"):
            raise AttributeError(name)
        tools = bridge.tools if bridge else {}
        if name not in tools:
            available = ", ".join(sorted(tools)) or "none"
            message = (f"module 'tools' has no tool {name!r}; available tools: {available}"
                       if bridge else f"module 'tools' has no tool {name!r}: {_NO_HOST}")
            # ``from tools import x`` would swap an AttributeError for a bare ImportError.
            caller = sys._getframe(1)
            if caller.f_code.co_code[caller.f_lasti] == _IMPORT_FROM:
                raise ImportError(message, name="tools")
            raise AttributeError(message)
        assert bridge is not None
        function = bridge.functions.get(name)
        if function is None:
            function = bridge.functions[name] = make_tool_function(tools[name], self._bridge)
        return function

    def __dir__(self) -> list[str]:
        bridge = self._current_bridge()
        return sorted([*(bridge.tools if bridge else ()), "ToolError"])
