"""Tools from a module name or a ``.py`` file, as the CLI and servers take them.

A source's tools are its ``TOOLS`` (a list, or a dict of name to function) if it has
one, else the functions named in ``__all__``, else the public functions defined in
it (not the ones it imports). Classes are tools only when ``TOOLS`` lists them:
``--tools json`` serves ``dumps`` and ``loads``, not ``JSONDecoder``. Anything amiss
raises ``ToolDefinitionError`` saying what to do.

A source may also say which of its tools need a person's approval before they run:
``REQUIRES_APPROVAL``, a set of tool names or a function ``(tool, arguments) -> bool``.
It is never a tool itself; ``approval_policy`` reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..exceptions import ToolDefinitionError
from .tools import Tool, ToolRegistry

# The module attribute that says which tools need approval; never served as a tool.
APPROVAL_ATTRIBUTE = "REQUIRES_APPROVAL"

# A predicate over (tool name, arguments): does this call need approval?
ApprovalPredicate = Callable[[str, dict[str, Any]], bool]


def load_tools(sources: Sequence[str]) -> ToolRegistry:
    """The tools of every module or ``.py`` file in ``sources``, in one registry.

    A module gives its ``TOOLS`` list or dict, else the functions named in its
    ``__all__``, else its public functions (classes only when ``TOOLS`` lists them).

    Args:
        sources: Module names (``"my_package.tools"``) or paths of ``.py`` files.

    Returns:
        One registry with the tools of them all.

    Raises:
        ToolDefinitionError: A source defines no tools, two define a tool of the same
            name, or a function cannot be a tool.
    """
    tools: dict[str, Tool] = {}
    origin: dict[str, str] = {}
    for source in sources:
        try:
            registry = ToolRegistry(tools_of(import_tools(source), source))
        except ToolDefinitionError as exc:
            raise ToolDefinitionError(f"{source}: {exc}") from None
        if not registry:
            raise ToolDefinitionError(
                f"{source} defines no tools: define public functions in it, or list the "
                "tools to serve in TOOLS = [...] (or __all__)"
            )
        for name, tool in registry.items():
            if name in tools:
                raise ToolDefinitionError(
                    f"two tools are named {name!r} (in {origin[name]} and {source}); rename "
                    "one, or choose the tools each file serves with TOOLS = [...]"
                )
            tools[name] = tool
            origin[name] = source
    return ToolRegistry(tools)


def tools_of(module: ModuleType, source: str | None = None) -> Any:
    """What a tools module offers: ``TOOLS``, else the functions in ``__all__`` (its
    public names, classes and constants too), else its own public functions."""
    if hasattr(module, "TOOLS"):
        declared = module.TOOLS
        if not isinstance(declared, (Mapping, list, tuple)):
            raise ToolDefinitionError(
                f"{source or module.__name__}: TOOLS must be a list of functions or a dict "
                f"of name to function, not {type(declared).__name__}"
            )
        return declared
    names = getattr(module, "__all__", None)
    if names is not None:
        return [
            value
            for value in (
                getattr(module, name, None) for name in names if name != APPROVAL_ATTRIBUTE
            )
            if callable(value) and not isinstance(value, type)
        ]
    return [
        value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != APPROVAL_ATTRIBUTE
        and inspect.isfunction(value)
        and value.__module__ == module.__name__
    ]


def approval_policy(sources: Sequence[str]) -> ApprovalPredicate | None:
    """Which calls of these sources' tools need approval, by their ``REQUIRES_APPROVAL``.

    Each source's policy covers its own tools: a set (or list) of its tool names, or
    a function ``(tool, arguments) -> bool`` asked about each call of them.

    Args:
        sources: Module names or ``.py`` files, as given to ``load_tools``.

    Returns:
        A predicate over ``(tool name, arguments)``, or None when no source has a policy.

    Raises:
        ToolDefinitionError: A policy is neither names nor a function, or names a tool
            its source does not define.
    """
    policies: dict[str, ApprovalPredicate] = {}  # tool name -> its source's policy
    for source in sources:
        module = import_tools(source)
        if not hasattr(module, APPROVAL_ATTRIBUTE):
            continue
        names = list(ToolRegistry(tools_of(module, source)))
        policy = _policy_of(getattr(module, APPROVAL_ATTRIBUTE), names, source)
        policies.update(dict.fromkeys(names, policy))
    if not policies:
        return None

    def requires_approval(tool: str, arguments: dict[str, Any]) -> bool:
        policy = policies.get(tool)
        return policy is not None and bool(policy(tool, arguments))

    return requires_approval


def with_approved_names(
    approve: Collection[str],
    declared: ApprovalPredicate | None,
    tools: Collection[str],
) -> Collection[str] | ApprovalPredicate | None:
    """Which calls need approval: the tools named in ``approve`` and the calls
    ``declared`` says (a tools module's ``REQUIRES_APPROVAL``); None: none.

    Args:
        approve: Tool names (``--approve TOOL``).
        declared: A predicate over ``(tool name, arguments)``, or None.
        tools: The names of every tool offered.

    Returns:
        The names alone (a set), a predicate over ``(tool name, arguments)``, or None
        when no call needs approval.

    Raises:
        ToolDefinitionError: A name in ``approve`` is no tool; the message names the tools.
    """
    unknown = [name for name in approve if name not in tools]
    if unknown:
        raise ToolDefinitionError(
            f"--approve {unknown[0]}: there is no tool of that name; the tools are "
            f"{', '.join(sorted(tools)) or 'none'}"
        )
    named = frozenset(approve)
    if declared is None:
        return named or None
    return lambda tool, arguments: tool in named or declared(tool, arguments)


def _policy_of(declared: Any, names: list[str], source: str) -> ApprovalPredicate:
    if callable(declared) and not isinstance(declared, type):
        return declared  # type: ignore[no-any-return]
    if isinstance(declared, str) or not isinstance(declared, Collection):
        raise ToolDefinitionError(
            f"{source}: {APPROVAL_ATTRIBUTE} must be a set of tool names, or a function "
            f"(tool, arguments) -> bool, not {type(declared).__name__}"
        )
    unknown = sorted(str(name) for name in declared if name not in names)
    if unknown:
        raise ToolDefinitionError(
            f"{source}: {APPROVAL_ATTRIBUTE} names {', '.join(map(repr, unknown))}, which "
            f"{'is no tool' if len(unknown) == 1 else 'are no tools'} of it; its tools: "
            f"{', '.join(names)}"
        )
    chosen = frozenset(declared)
    return lambda tool, arguments: tool in chosen


def import_tools(source: str) -> ModuleType:
    """Import a module by name, or a .py file under a private module name."""
    path = Path(source)
    if source.endswith(".py") or "/" in source or os.sep in source or path.is_file():
        if path.is_dir():
            raise ToolDefinitionError(f"{source} is a directory; give a .py file or a module name")
        if not path.is_file():
            raise ToolDefinitionError(
                f"tools file not found: {source} (give the path of a "
                ".py file, or the name of an importable module)"
            )
        return _import_file(path.resolve(), source)
    return _import_module(source)


def _import_file(path: Path, source: str) -> ModuleType:
    # A private name: a file called tools.py (or json.py...) shadows nothing this way.
    name = "_progtc_tools_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ToolDefinitionError(f"cannot import {source}: it is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.append(directory)  # for its sibling imports; last, so it shadows nothing
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if not isinstance(exc, Exception):
            raise
        raise ToolDefinitionError(f"importing {source} failed:\n{_format_exception(exc)}") from None
    return module


def _import_module(name: str) -> ModuleType:
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to you import
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ToolDefinitionError(
                f"no module named {name!r}: give a .py file path (e.g. --tools "
                f"{name.replace('.', '/')}.py) or the name of a module importable from "
                "here"
            ) from None
        raise ToolDefinitionError(f"importing {name} failed:\n{_format_exception(exc)}") from None
    except Exception as exc:
        raise ToolDefinitionError(f"importing {name} failed:\n{_format_exception(exc)}") from None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(os.getcwd())


def _format_exception(exc: BaseException) -> str:
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename != __file__ and not frame.filename.startswith("<frozen")
    ]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return ("Traceback (most recent call last):\n" if frames else "") + "".join(lines).rstrip()
