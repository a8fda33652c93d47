"""Python names for tools named elsewhere.

MCP servers and agent frameworks name tools ``get-annotated-message`` or
``files.read``; a script calls ``tools.get_annotated_message``. ``foreign_tools``
is the one place such names are mapped (``progtc-kernel mcp --upstream``,
``upstream_tools``, ``CodeModeToolset``'s toolsets):

* a name that is already a Python name is kept; two sources offering the same one
  is an error, as the user must pick;
* any other name becomes its Python spelling (``-``, ``.`` and other characters
  to ``_``; ``tool_`` before a leading digit; ``_`` after a keyword), and if that
  is taken, the first free of ``name_2``, ``name_3``... in the order the tools are
  given, logged and said in the tool's docstring;
* the stub's docstring names the original, which is what the source is called with
  (the callable given keeps it).
"""

from __future__ import annotations

import keyword
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ..exceptions import ToolDefinitionError
from .tools import Tool

log = logging.getLogger("progtc_kernel.tools")
# Renamings already logged: CodeModeToolset names its toolsets' tools on every step.
_LOGGED: set[tuple[str, str, str]] = set()


class ForeignTool(NamedTuple):
    """A tool as another system describes it: its own name, JSON schemas, and a
    callable taking the arguments as one dict (which calls it by that name)."""

    name: str
    input_schema: Mapping[str, Any]
    function: Callable[[dict[str, Any]], Awaitable[Any] | Any]
    source: str
    """Who offers it, for messages: "the MCP server 'npx ...'"."""
    description: str | None = None
    output_schema: Mapping[str, Any] | None = None


def python_name(name: str) -> str:
    """``get-annotated-message`` -> ``get_annotated_message``; ``3d.view`` ->
    ``tool_3d_view``; ``class`` -> ``class_``. A Python name is returned as is."""
    if is_python_name(name):
        return name
    spelled = re.sub(r"\W", "_", name)
    if not spelled.isidentifier():  # a Unicode "word" character Python does not accept
        spelled = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not spelled or spelled[0].isdigit():
        spelled = f"tool_{spelled}" if spelled else "tool"
    return f"{spelled}_" if keyword.iskeyword(spelled) else spelled


def is_python_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def foreign_tools(
    tools: Iterable[ForeignTool], *, taken: Mapping[str, str] | Iterable[str] = ()
) -> list[Tool]:
    """``tools`` as host tools with Python names (see the module's docstring).
    ``taken``: names already offered (a mapping to who offers them, for messages)."""
    listed = list(tools)
    owners = dict(taken) if isinstance(taken, Mapping) else dict.fromkeys(taken, "the host tools")
    for tool in listed:  # Python names first: they keep their name wherever they come
        if is_python_name(tool.name):
            if tool.name in owners:
                raise ToolDefinitionError(
                    f"two tools are named {tool.name!r}: one in {owners[tool.name]}, one in "
                    f"{tool.source}; give one of them another name or leave one out"
                )
            owners[tool.name] = tool.source
    built = []
    for tool in listed:
        name = tool.name if is_python_name(tool.name) else _free_name(tool, owners)
        built.append(
            Tool.from_schema(
                name,
                tool.input_schema,
                tool.function,
                description=_described(tool, name, owners),
                output_schema=tool.output_schema,
            )
        )
    return built


def _free_name(tool: ForeignTool, owners: dict[str, str]) -> str:
    base = name = python_name(tool.name)
    number = 1
    while name in owners:
        number += 1
        name = f"{base}_{number}"
    if name != base and (tool.name, tool.source, name) not in _LOGGED:
        _LOGGED.add((tool.name, tool.source, name))
        log.warning(
            "the tool %r of %s is named %r: %r is taken by %s",
            tool.name,
            tool.source,
            name,
            base,
            owners[base],
        )
    owners[name] = tool.source
    return name


def _described(tool: ForeignTool, name: str, owners: Mapping[str, str]) -> str | None:
    """The docstring, led by the tool's own name where the kernel shows another."""
    if name == tool.name:
        return tool.description
    base = python_name(tool.name)
    why = f" ({base!r} is taken by {owners[base]})" if name != base else ""
    note = f"Called {tool.name!r} by {tool.source}; {name!r} here{why}."
    return f"{note}\n\n{tool.description}" if tool.description else note
