"""A tool from a JSON schema and a callable taking the arguments as one dict.

This is how tools arrive from MCP servers and agent frameworks: no Python
signature, only schemas. The kernel sees a signature built from the input schema
(required properties first, optional ones with ``= ...`` as in a stub file); the
host checks arguments, and results where an output schema is given, with
``jsonschema`` before and after the tool runs.
"""

from __future__ import annotations

import copy
import functools
import inspect
import keyword
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..exceptions import ToolDefinitionError
from ..protocol import ParameterSpec, ToolSpec
from .function_tool import encode_json
from .threads import ToolThreads
from .tools import ArgumentsInvalid, QueueHook, ResultInvalid, Tool, check_name

_SIMPLE = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "null": "None",
    "array": "list",
    "object": "dict",
}


class SchemaTool(Tool):
    """A JSON-schema-described callable as a tool; see ``Tool.from_schema``."""

    def __init__(
        self,
        name: str,
        input_schema: Mapping[str, Any],
        function: Callable[[dict[str, Any]], Awaitable[Any] | Any],
        *,
        description: str | None = None,
        output_schema: Mapping[str, Any] | None = None,
        requires_approval: bool = False,
    ) -> None:
        if not callable(function):
            raise ToolDefinitionError(f"tool {name!r}: {function!r} is not callable")
        self.name = check_name(name)
        self.function = function
        self.description = description
        self.requires_approval = bool(requires_approval)
        self._input_schema = copy.deepcopy(dict(input_schema))
        self._output_schema = None if output_schema is None else copy.deepcopy(dict(output_schema))
        if self._input_schema.get("type", "object") != "object":
            raise ToolDefinitionError(
                f'tool {name!r}: its input schema must describe an object ("type": '
                f'"object"), not {self._input_schema.get("type")!r}'
            )
        self._check_arguments = _validator(name, "input", self._input_schema)
        self._check_result = (
            None if self._output_schema is None else _validator(name, "output", self._output_schema)
        )
        self.is_async = inspect.iscoroutinefunction(function) or (
            not inspect.isroutine(function) and inspect.iscoroutinefunction(type(function).__call__)
        )

    def __repr__(self) -> str:
        return f"SchemaTool(name={self.name!r})"

    def renamed(self, name: str) -> SchemaTool:
        return SchemaTool(
            name,
            self._input_schema,
            self.function,
            description=self.description,
            output_schema=self._output_schema,
            requires_approval=self.requires_approval,
        )

    @property
    def input_schema(self) -> dict[str, Any]:
        return self._input_schema

    @property
    def output_schema(self) -> dict[str, Any] | None:
        return self._output_schema

    @functools.cached_property
    def _parameters(self) -> list[ParameterSpec]:
        properties: dict[str, Any] = self._input_schema.get("properties") or {}
        required = set(self._input_schema.get("required") or ())
        named = {
            n: s for n, s in properties.items() if n.isidentifier() and not keyword.iskeyword(n)
        }
        parameters: list[ParameterSpec] = []
        for wanted in (True, False):  # Python wants parameters without defaults first
            for name, schema in named.items():
                if (name in required) != wanted:
                    continue
                default = (
                    None if wanted else (repr(schema["default"]) if "default" in schema else "...")
                )
                parameters.append(
                    {
                        "name": name,
                        "kind": "positional_or_keyword",
                        "annotation": annotation_of(schema),
                        "default_repr": default,
                    }
                )
        if len(named) < len(properties) or self._input_schema.get("additionalProperties"):
            # Names Python cannot spell (``from``, ``user-id``) go through **arguments.
            parameters.append(
                {
                    "name": "arguments",
                    "kind": "var_keyword",
                    "annotation": None,
                    "default_repr": None,
                }
            )
        return parameters

    def spec(self) -> ToolSpec:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self._parameters,
            "returns": None if self._output_schema is None else annotation_of(self._output_schema),
            "input_schema": self._input_schema,
            "output_schema": self._output_schema,
        }

    async def _invoke(
        self,
        arguments: dict[str, Any],
        threads: ToolThreads,
        on_queued: QueueHook | None,
        on_started: QueueHook | None,
    ) -> Any:
        problems = _problems(self._check_arguments, arguments)
        if problems:
            raise ArgumentsInvalid(problems)
        if self.is_async:
            return await self.function(arguments)
        ok, value = await threads.run(
            self.function, [arguments], {}, on_queued=on_queued, on_started=on_started
        )
        if not ok:
            raise value
        return await value if inspect.isawaitable(value) else value

    def _encode(self, value: Any) -> bytes:
        encoded = encode_json(value)
        if self._check_result is not None:
            import json

            problems = _problems(self._check_result, json.loads(encoded))
            if problems:
                raise ResultInvalid(
                    f"the tool returned a value that does not match its "
                    f"output schema ({problems}); fix the tool or its schema"
                )
        return encoded


def _validator(tool: str, which: str, schema: dict[str, Any]) -> Any:
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ToolDefinitionError(
            f"tool {tool!r}: its {which} schema is not a valid JSON schema ({exc.message})"
        ) from None
    return cls(schema)


def _problems(validator: Any, instance: Any) -> str:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return "; ".join(
        f"{'.'.join(str(p) for p in error.absolute_path) or 'arguments'}: {error.message}"
        for error in errors
    )


def annotation_of(schema: Any) -> str:
    """A Python annotation, as text, for a JSON schema: ``list[str]``, ``int | None``..."""
    if not isinstance(schema, dict):
        return "Any"
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    if "const" in schema:
        return f"Literal[{schema['const']!r}]"
    for union in ("anyOf", "oneOf"):
        if isinstance(schema.get(union), list):
            return " | ".join(dict.fromkeys(annotation_of(s) for s in schema[union]))
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(annotation_of({**schema, "type": k}) for k in kind)
    if kind == "array":
        return f"list[{annotation_of(schema.get('items'))}]"
    if kind == "object":
        values = schema.get("additionalProperties")
        return f"dict[str, {annotation_of(values)}]" if isinstance(values, dict) else "dict"
    return _SIMPLE.get(kind, "Any") if isinstance(kind, str) else "Any"
