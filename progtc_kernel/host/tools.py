"""What a tool is, and a set of them.

A ``Tool`` is offered to kernel code as ``tools.<name>``. There are two kinds, each
in its own module: ``Tool.from_function`` (a Python callable, described and validated
from its signature with pydantic) and ``Tool.from_schema`` (a JSON schema and a
callable taking the arguments dict: how MCP and agent-framework tools arrive). A
``ToolRegistry`` is an immutable set of tools by name.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import keyword
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

from .. import _python
from ..exceptions import RESERVED_TOOL_NAMES, ToolDefinitionError
from ..protocol import CallError, ErrorKind, ToolSpec
from .threads import ToolThreads

ToolsLike = Union["ToolRegistry", Mapping[str, Any], Iterable[Any], None]
# ``on_queued``/``on_started`` of a call: a call may run once what ``on_started``
# returns, if anything, is done (the kernel's ack of a held call).
QueueHook = Callable[[], "Awaitable[None] | None"]


@dataclass(frozen=True)
class Outcome:
    """How a call ended: the result's JSON, or an error."""

    value_json: bytes = b"null"
    error: CallError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def entry(self, call_id: int) -> bytes:
        """The call's entry in a ``results`` body, as JSON."""
        if self.error is None:
            return b'{"id":%d,"ok":true,"value":%s}' % (call_id, self.value_json)
        # json escapes what UTF-8 cannot carry (a lone surrogate in a message).
        return json.dumps({"id": call_id, "ok": False, "error": self.error}).encode()

    def describe_error(self) -> str | None:
        return None if self.error is None else f"{self.error['type']}: {self.error['message']}"


def failure(kind: ErrorKind, error_type: str, message: str) -> Outcome:
    return Outcome(error={"kind": kind, "type": error_type, "message": message})


class ArgumentsInvalid(Exception):
    """The arguments do not fit the tool (the message says how)."""


class ResultInvalid(Exception):
    """The result does not fit the tool's declared type, or cannot become JSON."""


class Tool(ABC):
    """A host callable offered to kernel code as ``tools.<name>``.

    Make one with ``Tool.from_function`` or ``Tool.from_schema``; a plain callable given
    as a tool becomes one by ``from_function``.

    Attributes:
        name: The name the kernel calls it by.
        description: What the kernel's ``help()`` shows.
        requires_approval: Each call waits for a decision (see ``ToolKernel``'s
            ``approve``) before the tool runs.
    """

    name: str
    description: str | None
    requires_approval: bool = False

    @staticmethod
    def from_function(
        function: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
    ) -> Tool:
        """A tool from a Python callable, sync or async.

        Its signature and type hints describe it to the kernel, and validate its arguments
        and its result.

        Args:
            function: The callable (a ``Tool`` is returned as it is, or renamed).
            name: The name the kernel calls it by; default: the function's own.
            description: What the kernel's ``help()`` shows; default: its docstring.
            requires_approval: Each call waits for a decision before the tool runs.

        Returns:
            The tool.

        Raises:
            ToolDefinitionError: A parameter or the return type cannot travel as JSON, or
                the name is reserved.
        """
        from .function_tool import FunctionTool

        if isinstance(function, Tool):
            tool = function if name is None else function.renamed(name)
            return tool.requiring_approval() if requires_approval else tool
        return FunctionTool.build(
            function, name=name, description=description, requires_approval=requires_approval
        )

    @staticmethod
    def from_schema(
        name: str,
        input_schema: Mapping[str, Any],
        function: Callable[[dict[str, Any]], Awaitable[Any] | Any],
        *,
        description: str | None = None,
        output_schema: Mapping[str, Any] | None = None,
        requires_approval: bool = False,
    ) -> Tool:
        """A tool from a JSON schema of its arguments, the way MCP and agent frameworks
        describe tools.

        The kernel sees a signature built from the schema; arguments (and results, given
        ``output_schema``) are checked against it with jsonschema.

        Args:
            name: The name the kernel calls it by.
            input_schema: The JSON schema of the arguments object.
            function: Called with the arguments as one dict; sync or async.
            description: What the kernel's ``help()`` shows.
            output_schema: The JSON schema of the result, if it has one.
            requires_approval: Each call waits for a decision before the tool runs.

        Returns:
            The tool.
        """
        from .schema_tool import SchemaTool

        return SchemaTool(
            name,
            input_schema,
            function,
            description=description,
            output_schema=output_schema,
            requires_approval=requires_approval,
        )

    def requiring_approval(self) -> Tool:
        """The same tool, whose every call waits for a decision before it runs.

        Returns:
            A new tool; this one is unchanged.
        """
        tool = copy.copy(self)
        object.__setattr__(tool, "requires_approval", True)  # a frozen dataclass, too
        return tool

    @property
    @abstractmethod
    def input_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments object."""

    @property
    @abstractmethod
    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema of the result, if declared."""

    @abstractmethod
    def spec(self) -> ToolSpec:
        """How the kernel shows this tool: signature, docstring, schemas."""

    @abstractmethod
    def renamed(self, name: str) -> Tool:
        """The same tool under another name.

        Args:
            name: The new name.

        Returns:
            A new tool; this one is unchanged.
        """

    @abstractmethod
    async def _invoke(
        self,
        arguments: dict[str, Any],
        threads: ToolThreads,
        on_queued: QueueHook | None,
        on_started: QueueHook | None,
    ) -> Any:
        """Check the arguments (raise ArgumentsInvalid) and run the tool."""

    @abstractmethod
    def _encode(self, value: Any) -> bytes:
        """Check the result and turn it into JSON (raise ResultInvalid)."""

    @functools.cached_property
    def fingerprint(self) -> str:
        text = json.dumps(self.spec(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()

    async def call(
        self,
        arguments: dict[str, Any],
        threads: ToolThreads | None = None,
        *,
        on_queued: QueueHook | None = None,
        on_started: QueueHook | None = None,
    ) -> Outcome:
        """Validate, run, check and encode: an outcome that never raises, except the
        host's own cancellation of this call."""
        try:
            value = await self._invoke(
                arguments, threads or _default_threads(), on_queued, on_started
            )
        except ArgumentsInvalid as exc:
            return failure("arguments", "ValidationError", str(exc))
        except asyncio.CancelledError as exc:
            if _cancelled_by_host():
                raise
            return failure("tool", "CancelledError", str(exc) or "the tool was cancelled")
        except BaseException as exc:
            return failure("tool", type(exc).__name__, str(exc))
        try:
            return Outcome(self._encode(value))
        except ResultInvalid as exc:
            return failure("result", "ResultError", str(exc))


def _cancelled_by_host() -> bool:
    """Whether the running task is being cancelled (by us), rather than the tool
    having raised CancelledError by itself. Python 3.10 cannot tell: assume us."""
    return _python.being_cancelled(asyncio.current_task()) is not False


@functools.lru_cache(maxsize=1)
def _default_threads() -> ToolThreads:
    return ToolThreads()


def check_name(name: str) -> str:
    """``name`` if kernel code can call a tool by it as ``tools.<name>``, or, for a
    tool of a namespace, ``namespace.tool`` (``from tools.<namespace> import tool``)."""
    parts = name.split(".", 1) if isinstance(name, str) else [name]
    if not all(isinstance(p, str) and p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise ToolDefinitionError(
            f"{name!r} is not a valid Python name for a tool; pass tools as a mapping "
            "to name it, e.g. tools={'lookup': my_callable}"
        )
    reason = reserved_name_reason(parts[0])
    if reason is None and len(parts) > 1 and _is_dunder(parts[1]):
        reason = f"{parts[1]!r} is a dunder name, kept for Python's own module attributes"
    if reason is not None:
        raise ToolDefinitionError(
            f"{name!r} cannot name a tool: in the kernel's tools module {reason}; pass "
            "tools as a mapping to name it otherwise, e.g. tools={'lookup': my_callable}"
        )
    return name


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def reserved_name_reason(name: str) -> str | None:
    """Why the ``tools`` module keeps ``name`` for itself, or None if a tool may take it."""
    if _is_dunder(name):
        return "it is a dunder name, kept for Python's own module attributes"
    return RESERVED_TOOL_NAMES.get(name)


def _check_namespaces(names: Iterable[str]) -> None:
    """A namespace (``github`` of ``github.search_issues``) cannot also be a tool's name."""
    listed = set(names)
    for name in listed:
        namespace, dot, _ = name.partition(".")
        if dot and namespace in listed:
            raise ToolDefinitionError(
                f"{namespace!r} names both a tool and the namespace of {name!r}; rename "
                "the tool or the namespace"
            )


class ToolRegistry(Mapping[str, Tool]):
    """An immutable set of tools, by name: what a kernel's ``tools`` module offers.

    Example:
        ```python
        registry = ToolRegistry([get_weather, Tool.from_schema("forecast", schema, call)])
        registry = ToolRegistry({"weather": get_weather})  # the key is the name
        ```

    Args:
        tools: A list of callables or ``Tool`` objects (each named after itself), or a
            mapping of name to callable or ``Tool`` (the key is the name, whatever the
            value). ``None``: no tools.

    Raises:
        ToolDefinitionError: A callable cannot be a tool (a type JSON cannot carry, a
            reserved name); the message says why and what to do.
    """

    # Tools whose calls may wait for an approval this registry's ``call`` asks for
    # itself, not the kernel's approver (``CodeModeToolset``: pydantic-ai decides); the
    # kernel sends a ``gather``'s calls of these together, as of those that require it.
    approved_by_call: frozenset[str] = frozenset()

    def __init__(self, tools: ToolsLike = None) -> None:
        if isinstance(tools, ToolRegistry):
            self._tools: dict[str, Tool] = dict(tools._tools)
            self.approved_by_call = tools.approved_by_call
        elif isinstance(tools, Mapping):
            self._tools = {check_name(str(n)): _tool_for(f, str(n)) for n, f in tools.items()}
        else:
            self._tools = {}
            for item in tools or ():
                tool = _tool_for(item)
                if tool.name in self._tools:
                    raise ToolDefinitionError(
                        f"two tools are named {tool.name!r}; pass a mapping to name them apart"
                    )
                self._tools[tool.name] = tool
        _check_namespaces(self._tools)

    @classmethod
    def of(cls, tools: ToolsLike) -> ToolRegistry:
        """``tools`` itself if it is a registry (they are immutable), else a new one.

        Args:
            tools: As for ``ToolRegistry``.

        Returns:
            The registry.
        """
        return tools if isinstance(tools, ToolRegistry) else cls(tools)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({sorted(self._tools)})"

    def specs(self) -> list[ToolSpec]:
        return [tool.spec() for tool in self._tools.values()]

    @functools.cached_property
    def fingerprint(self) -> str:
        """Changes whenever what the kernel sees of these tools changes."""
        text = ",".join(f"{name}:{tool.fingerprint}" for name, tool in self._tools.items())
        return hashlib.sha1(text.encode()).hexdigest()

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        threads: ToolThreads | None = None,
        *,
        on_queued: QueueHook | None = None,
        on_started: QueueHook | None = None,
    ) -> Outcome:
        tool = self._tools.get(name)
        if tool is None:
            available = (
                ", ".join(sorted(self._tools))
                or "none: the host serves no tools; "
                "give it some: tools=[...] in Python or --tools on the command line"
            )
            return failure(
                "unknown_tool",
                "LookupError",
                f"no tool named {name!r}; available tools: {available}",
            )
        return await tool.call(arguments, threads, on_queued=on_queued, on_started=on_started)


# Building a tool (pydantic models, schemas) costs about a millisecond; agents pass
# the same functions on every execute, so each is built once.
_BUILT: weakref.WeakKeyDictionary[Any, dict[str | None, Tool]] = weakref.WeakKeyDictionary()


def _tool_for(function: Any, name: str | None = None) -> Tool:
    if isinstance(function, Tool):
        return function if name is None or name == function.name else function.renamed(name)
    try:
        built = _BUILT.setdefault(function, {})
    except TypeError:  # not weak-referenceable: build it every time
        return Tool.from_function(function, name=name)
    tool = built.get(name)
    if tool is None:
        tool = built[name] = Tool.from_function(function, name=name)
    return tool
