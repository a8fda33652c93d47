"""Host tools: plain callables, described for the kernel and validated with pydantic."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import keyword
import typing
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import pydantic
import pydantic_core

from ..exceptions import ToolDefinitionError
from ..protocol import CallError, CallResult, ParameterSpec, ToolSpec

ToolsLike = Union["ToolRegistry", Mapping[str, Callable[..., Any]], Iterable[Any], None]

_KIND_NAMES: dict[Any, Any] = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


@dataclass(frozen=True)
class Tool:
    """A host callable offered to kernel code as ``tools.<name>``."""

    name: str
    function: Callable[..., Any]
    description: str | None
    signature: inspect.Signature
    arguments_model: type[pydantic.BaseModel] = field(repr=False)
    result_adapter: pydantic.TypeAdapter[Any] = field(repr=False)
    is_async: bool = False

    @classmethod
    def from_function(
        cls, function: Any, *, name: str | None = None,
        description: str | None = None,
    ) -> Tool:
        if isinstance(function, Tool):
            return function
        if not callable(function):
            raise ToolDefinitionError(f"{function!r} is not callable, so it cannot be a tool")
        name = name or getattr(function, "__name__", None) or type(function).__name__
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ToolDefinitionError(
                f"{name!r} is not a valid Python name for a tool; pass tools as a mapping "
                "to name it, e.g. tools={'lookup': my_callable}")
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError) as exc:
            raise ToolDefinitionError(f"tool {name!r}: cannot read its signature ({exc})") from None
        hints = _type_hints(function)
        return cls(
            name=name,
            function=function,
            description=description if description is not None else inspect.getdoc(function),
            signature=signature,
            arguments_model=_arguments_model(name, signature, hints),
            result_adapter=_adapter(name, hints.get("return", Any)),
            is_async=_is_async(function),
        )

    @functools.cached_property
    def input_schema(self) -> dict[str, Any]:
        schema = self.arguments_model.model_json_schema(by_alias=True)
        schema.pop("title", None)
        return schema

    @functools.cached_property
    def output_schema(self) -> dict[str, Any] | None:
        if self.signature.return_annotation is inspect.Signature.empty:
            return None
        try:
            return self.result_adapter.json_schema()
        except pydantic.PydanticUserError:
            return None

    @functools.cached_property
    def fingerprint(self) -> str:
        text = json.dumps(self.spec(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()

    def spec(self) -> ToolSpec:
        parameters: list[ParameterSpec] = [
            {
                "name": p.name,
                "kind": _KIND_NAMES[p.kind],
                "annotation": None if p.annotation is p.empty else _annotation_text(p.annotation),
                "default_repr": None if p.default is p.empty else repr(p.default),
            }
            for p in self.signature.parameters.values()
        ]
        returns = self.signature.return_annotation
        return {
            "name": self.name,
            "description": self.description,
            "parameters": parameters,
            "returns": None if returns is inspect.Signature.empty else _annotation_text(returns),
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
        }

    async def call(self, arguments: dict[str, Any]) -> CallResult:
        """Validate, run, serialize: a protocol result that never raises."""
        try:
            validated = self.arguments_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            return _failure("arguments", "ValidationError", _describe(exc))
        args, kwargs = self._call_arguments(validated)
        try:
            if self.is_async:
                value = await self.function(*args, **kwargs)
            else:
                value = await asyncio.to_thread(self.function, *args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
        except Exception as exc:
            return _failure("tool", type(exc).__name__, str(exc))
        try:
            return {"ok": True, "value": self.result_adapter.dump_python(
                value, mode="json", warnings=False)}
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            return _failure("result", type(exc).__name__,
                            f"the result cannot be turned into JSON: {exc}")

    def _call_arguments(self, validated: pydantic.BaseModel) -> tuple[list[Any], dict[str, Any]]:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        positional = True  # until a defaulted parameter is left out
        for index, p in enumerate(self.signature.parameters.values()):
            name = f"p{index}"
            value = getattr(validated, name)
            if p.kind is p.VAR_POSITIONAL:
                args.extend(value)
            elif p.kind is p.VAR_KEYWORD:
                kwargs.update(value)
            elif name not in validated.model_fields_set and p.default is not p.empty:
                if p.kind is p.POSITIONAL_ONLY:
                    args.append(p.default)
                else:
                    positional = False  # the function applies its own default
            elif p.kind is p.POSITIONAL_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and positional):
                args.append(value)
            else:
                kwargs[p.name] = value
        return args, kwargs


class ToolRegistry(Mapping[str, Tool]):
    """An immutable set of tools, by name."""

    def __init__(self, tools: ToolsLike = None) -> None:
        if isinstance(tools, ToolRegistry):
            self._tools: dict[str, Tool] = dict(tools._tools)
        elif isinstance(tools, Mapping):
            self._tools = {str(n): _tool_for(f, str(n)) for n, f in tools.items()}
        else:
            self._tools = {}
            for item in tools or ():
                tool = _tool_for(item)
                if tool.name in self._tools:
                    raise ToolDefinitionError(
                        f"two tools are named {tool.name!r}; pass a mapping to name them apart")
                self._tools[tool.name] = tool

    @classmethod
    def of(cls, tools: ToolsLike) -> ToolRegistry:
        """``tools`` itself if it is a registry (they are immutable), else a new one."""
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

    async def call(self, name: str, arguments: dict[str, Any]) -> CallResult:
        tool = self._tools.get(name)
        if tool is None:
            available = ", ".join(sorted(self._tools)) or "none"
            return _failure("unknown_tool", "LookupError",
                            f"no tool named {name!r}; available tools: {available}")
        return await tool.call(arguments)


# Building a Tool (pydantic models, schemas) costs about a millisecond; agents pass
# the same functions on every execute, so each is built once.
_BUILT: weakref.WeakKeyDictionary[Any, dict[str | None, Tool]] = weakref.WeakKeyDictionary()


def _tool_for(function: Any, name: str | None = None) -> Tool:
    if isinstance(function, Tool):
        return function
    try:
        built = _BUILT.setdefault(function, {})
    except TypeError:  # not weak-referenceable: build it every time
        return Tool.from_function(function, name=name)
    tool = built.get(name)
    if tool is None:
        tool = built[name] = Tool.from_function(function, name=name)
    return tool


def _failure(kind: Any, error_type: str, message: str) -> CallResult:
    error: CallError = {"kind": kind, "type": error_type, "message": message}
    return {"ok": False, "error": error}


def _describe(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(problems)


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    target = _code_of(function)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        return dict(getattr(target, "__annotations__", {}) or {})


def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(_code_of(function))


def _code_of(function: Callable[..., Any]) -> Any:
    """The function that really runs: through decorators, partials, callable objects."""
    target: Any = inspect.unwrap(function)
    while isinstance(target, functools.partial):
        target = target.func
    if not inspect.isroutine(target) and not isinstance(target, type):
        target = type(target).__call__
    return target


def _adapter(name: str, annotation: Any) -> pydantic.TypeAdapter[Any]:
    try:
        return pydantic.TypeAdapter(annotation, config=pydantic.ConfigDict(
            arbitrary_types_allowed=True))
    except pydantic.PydanticUserError:
        return pydantic.TypeAdapter(Any)


def _arguments_model(
    name: str, signature: inspect.Signature, hints: dict[str, Any]
) -> type[pydantic.BaseModel]:
    # Fields are p0, p1... aliased to the parameter names, so that a parameter may
    # be called anything (even "model_config" or "json") without clashing.
    fields: dict[str, Any] = {}
    for index, p in enumerate(signature.parameters.values()):
        annotation: Any = hints.get(p.name, Any)
        default: Any = ... if p.default is p.empty else p.default
        if p.kind is p.VAR_POSITIONAL:
            annotation, default = list[annotation], []
        elif p.kind is p.VAR_KEYWORD:
            annotation, default = dict[str, annotation], {}
        fields[f"p{index}"] = (annotation, pydantic.Field(default, alias=p.name, title=p.name))
    try:
        return pydantic.create_model(
            f"{name}_arguments",
            __config__=pydantic.ConfigDict(
                extra="forbid", arbitrary_types_allowed=True, populate_by_name=False),
            **fields,
        )
    except (pydantic.PydanticUserError, TypeError) as exc:
        raise ToolDefinitionError(
            f"tool {name!r}: pydantic cannot validate its parameters ({exc}); "
            "annotate them with JSON-friendly types") from None


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation).replace("typing.", "")
