"""A tool from a Python callable: its signature and type hints say everything.

Arguments are validated with a pydantic model built from the signature, results
against the return annotation, and both are described to the kernel as JSON
schemas. A parameter or return type that JSON cannot carry is refused when the tool
is defined, not when it is first called.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pydantic_core

from ..exceptions import ToolDefinitionError
from ..protocol import ParameterSpec, ToolSpec
from .threads import ToolThreads
from .tools import ArgumentsInvalid, QueueHook, ResultInvalid, Tool, check_name

_KIND_NAMES: dict[Any, Any] = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


@dataclass(frozen=True, eq=False)
class FunctionTool(Tool):
    """A Python callable (sync or async) as a tool; see ``Tool.from_function``."""

    name: str
    function: Callable[..., Any]
    description: str | None
    signature: inspect.Signature
    arguments_model: type[pydantic.BaseModel] = field(repr=False)
    result_adapter: pydantic.TypeAdapter[Any] | None = field(repr=False)
    is_async: bool = False
    requires_approval: bool = False

    @classmethod
    def build(
        cls,
        function: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
    ) -> FunctionTool:
        if not callable(function):
            raise ToolDefinitionError(f"{function!r} is not callable, so it cannot be a tool")
        name = check_name(name or getattr(function, "__name__", None) or type(function).__name__)
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError) as exc:
            raise ToolDefinitionError(f"tool {name!r}: cannot read its signature ({exc})") from None
        hints = _type_hints(function)
        returns = signature.return_annotation
        return cls(
            name=name,
            function=function,
            description=description if description is not None else inspect.getdoc(function),
            signature=signature,
            arguments_model=_arguments_model(name, signature, hints),
            result_adapter=(
                None
                if returns is inspect.Signature.empty
                else _adapter(
                    name, "its return type", hints.get("return", Any), "return JSON-friendly values"
                )
            ),
            is_async=inspect.iscoroutinefunction(_code_of(function)),
            requires_approval=bool(requires_approval),
        )

    def renamed(self, name: str) -> FunctionTool:
        return dataclasses.replace(self, name=check_name(name))

    @functools.cached_property
    def input_schema(self) -> dict[str, Any]:
        schema = self.arguments_model.model_json_schema(by_alias=True)
        schema.pop("title", None)
        return schema

    @functools.cached_property
    def output_schema(self) -> dict[str, Any] | None:
        if self.result_adapter is None:
            return None
        return self.result_adapter.json_schema(mode="serialization")

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

    async def _invoke(
        self,
        arguments: dict[str, Any],
        threads: ToolThreads,
        on_queued: QueueHook | None,
        on_started: QueueHook | None,
    ) -> Any:
        try:
            validated = self.arguments_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise ArgumentsInvalid(_describe(exc)) from None
        args, kwargs = self._call_arguments(validated)
        if self.is_async:
            return await self.function(*args, **kwargs)
        ok, value = await threads.run(
            self.function, args, kwargs, on_queued=on_queued, on_started=on_started
        )
        if not ok:
            raise value
        if inspect.isawaitable(value):  # a sync wrapper around an async function
            value = await value
        return value

    def _encode(self, value: Any) -> bytes:
        adapter = self.result_adapter
        if adapter is not None:
            try:
                value = adapter.validate_python(value)
            except pydantic.ValidationError as exc:
                raise ResultInvalid(
                    f"the tool returned a value that does not match its return type "
                    f"{_annotation_text(self.signature.return_annotation)} ({_describe(exc)}); "
                    "fix the tool or its return annotation"
                ) from None
        return encode_json(value, adapter)

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


def encode_json(value: Any, adapter: pydantic.TypeAdapter[Any] | None = None) -> bytes:
    """A result as JSON: models, dataclasses, dates... as pydantic serializes them;
    NaN and infinities kept (as the NaN/Infinity tokens the kernel reads back)."""
    try:
        plain = adapter.dump_python(value, warnings=False) if adapter is not None else value
        return pydantic_core.to_json(plain, inf_nan_mode="constants")
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise ResultInvalid(_unencodable(value, exc)) from None


def _unencodable(value: Any, exc: Exception) -> str:
    text = str(exc)
    if "utf-8 sequence" in text:
        return (
            "the result holds bytes that are not UTF-8 text; return binary data as "
            "base64 text (base64.b64encode(data).decode('ascii'), decoded in the kernel "
            "with base64.b64decode), or annotate the return type as pydantic.Base64Bytes"
        )
    if "surrogates not allowed" in text:
        return (
            "the result holds a string with a lone surrogate, which JSON cannot carry; "
            "clean the text (e.g. text.encode('utf-8', 'replace').decode())"
        )
    return f"the result cannot be turned into JSON: {text}"


def _describe(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "value"
        problems.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(problems)


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    target = _code_of(function)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        return dict(getattr(target, "__annotations__", {}) or {})


def _code_of(function: Callable[..., Any]) -> Any:
    """The function that really runs: through decorators, partials, callable objects."""
    target: Any = inspect.unwrap(function)
    while isinstance(target, functools.partial):
        target = target.func
    if not inspect.isroutine(target) and not isinstance(target, type):
        target = type(target).__call__
    return target


def _adapter(tool: str, what: str, annotation: Any, fix: str) -> pydantic.TypeAdapter[Any]:
    """A validating adapter for one annotation that JSON can carry both ways.

    An annotation left as text (a name ``get_type_hints`` could not resolve, as for a
    class defined inside a function) validates nothing, as if it were ``Any``."""
    if isinstance(annotation, str):
        annotation = Any
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(annotation)
        adapter.json_schema(mode="serialization")
        adapter.json_schema(mode="validation")
    except Exception as exc:  # pydantic's schema, user and undefined-annotation errors
        shown = _annotation_text(annotation)
        reason = str(exc).splitlines()[0]
        raise ToolDefinitionError(
            f"tool {tool!r}: {what} {shown} cannot travel as JSON ({reason}); {fix} "
            "(str, int, float, bool, None, lists, dicts, pydantic models, dataclasses, "
            "TypedDicts, dates...), or leave it unannotated"
        ) from None
    return adapter


def _arguments_model(
    name: str, signature: inspect.Signature, hints: dict[str, Any]
) -> type[pydantic.BaseModel]:
    # Fields are p0, p1... aliased to the parameter names, so that a parameter may
    # be called anything (even "model_config" or "json") without clashing.
    fields: dict[str, Any] = {}
    for index, p in enumerate(signature.parameters.values()):
        annotation: Any = hints.get(p.name, Any)
        if isinstance(annotation, str):
            annotation = Any  # unresolvable text: see _adapter
        _adapter(
            name,
            f"parameter {p.name!r}: its type",
            annotation,
            "annotate it with a JSON-friendly type",
        )
        default: Any = ... if p.default is p.empty else p.default
        if p.kind is p.VAR_POSITIONAL:
            annotation, default = list[annotation], []
        elif p.kind is p.VAR_KEYWORD:
            annotation, default = dict[str, annotation], {}
        fields[f"p{index}"] = (annotation, pydantic.Field(default, alias=p.name, title=p.name))
    try:
        return pydantic.create_model(
            f"{name}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid", populate_by_name=False),
            **fields,
        )
    except (pydantic.PydanticUserError, TypeError) as exc:
        raise ToolDefinitionError(
            f"tool {name!r}: pydantic cannot validate its parameters ({exc}); "
            "annotate them with JSON-friendly types"
        ) from None


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation).replace("typing.", "")
