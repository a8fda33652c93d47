"""Tools as typed Python stubs: the text a model reads before it writes a script.

One builder for both sides: the toolset's instructions list every tool's stub
(``stubs_source``), and ``tools.catalog.describe`` in the kernel shows one
(``described``), the same text. Standard library only: the kernel imports it.
"""

from __future__ import annotations

import builtins
import json
import keyword
import re
import textwrap
from collections.abc import Collection, Iterable
from typing import Any

from .protocol import ToolSpec, signature_of

NEEDS_APPROVAL = "Needs approval: each call waits until a person allows or denies it."


def short_name(name: str) -> str:
    """``github.search_issues`` -> ``search_issues``: the name a stub defines."""
    return name.rpartition(".")[2]


def stub(spec: ToolSpec, needs_approval: bool = False, returns: str | None = None) -> str:
    """A tool as a typed Python stub: signature, docstring, output schema.
    ``returns``: the return annotation shown instead of the tool's own."""
    doc = (spec["description"] or "").strip()
    if needs_approval:
        doc = f"{doc}\n\n{NEEDS_APPROVAL}".strip()
    if spec["output_schema"]:
        schema = json.dumps(spec["output_schema"], separators=(",", ":"), sort_keys=True)
        doc = f"{doc}\n\nReturns JSON matching: {schema}".strip()
    body = textwrap.indent(f'"""{doc}"""' if doc else "...", "    ")
    signature = signature_of(spec)
    if returns is not None:
        signature = signature.replace(return_annotation=_Shown(returns))
    return f"def {short_name(spec['name'])}{signature}:\n{body}"


class _Shown:
    """Shows as the annotation text it holds (in ``inspect.Signature``'s text)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def stubs_source(specs: list[ToolSpec], asking: Collection[str] = ()) -> str:
    """Every tool's stub, after the ``TypedDict`` of each result with an object output
    schema (what a script gets is JSON: ``result["temp"]``, typed); the tools of a
    namespace under a comment saying how to import them (``from tools.github import
    search_issues``). This is the text the instructions show, and what ``check_types``
    checks scripts against.

    Args:
        specs: The tools.
        asking: The names of the tools each of whose calls needs approval.
    """
    if not specs:
        return "# no tools are available"
    results = ResultTypes(specs)
    parts: list[str] = []
    namespace = ""
    # in the order given, the namespaced ones after, by namespace (a stable sort)
    for spec in sorted(specs, key=lambda spec: spec["name"].rpartition(".")[0]):
        space = spec["name"].rpartition(".")[0]
        if space != namespace:
            namespace = space
            parts.append(f"# tools.{space}: from tools.{space} import {short_name(spec['name'])}")
        parts.append(stub(spec, spec["name"] in asking, results.returns[spec["name"]]))
    classes = dict.fromkeys(name for spec in specs for name in results.used_by[spec["name"]])
    return "\n\n".join([*(results.texts[name] for name in classes), *parts])


def described(specs: list[ToolSpec], name: str, needs_approval: bool = False) -> str:
    """One tool's stub as ``stubs_source`` lists it, after the ``TypedDict`` classes its
    result uses (named as in the full listing).

    Args:
        specs: All the tools (the names of result classes depend on them all).
        name: The tool's name.
        needs_approval: Each of its calls needs approval.
    """
    results = ResultTypes(specs)
    spec = next(spec for spec in specs if spec["name"] == name)
    classes = [results.texts[used] for used in results.used_by[name]]
    return "\n\n".join([*classes, stub(spec, needs_approval, results.returns[name])])


class ResultTypes:
    """``TypedDict`` classes for tools' object output schemas, named after the schema's
    title (else the tool's), nested objects and ``$defs`` included. Named in the order
    of the tools' names: the host and the kernel name them alike, whatever order
    each got the tools in.

    Args:
        specs: The tools.
    """

    def __init__(self, specs: Iterable[ToolSpec]) -> None:
        ordered = sorted(specs, key=lambda spec: spec["name"])
        self.texts: dict[str, str] = {}  # class name -> its text
        self.returns: dict[str, str | None] = {}  # tool -> its return annotation, if typed
        self.used_by: dict[str, list[str]] = {}  # tool -> the classes it uses, inner first
        self._taken = {short_name(spec["name"]) for spec in ordered} | _TYPING_NAMES
        self._named: dict[int, str] = {}  # id(schema) -> its class, drawn once
        self._needs: dict[str, list[str]] = {}  # class -> the classes it uses, and itself
        self._using: list[str] = []  # the classes the tool at hand uses
        for spec in ordered:
            self._using = []
            self.returns[spec["name"]] = self._of(spec)
            self.used_by[spec["name"]] = list(dict.fromkeys(self._using))

    def _of(self, spec: ToolSpec) -> str | None:
        """The return annotation for ``spec``: a record, or a list of records, typed
        (None: its own annotation stays)."""
        schema = spec["output_schema"]
        if schema is None or not (_is_record(schema) or _is_record(_items(schema))):
            return None
        return self._type(schema, schema, _camel(spec["name"]) + "Result")

    def _type(self, schema: Any, root: dict[str, Any], name: str) -> str:
        if not isinstance(schema, dict):
            return "Any"
        if "$ref" in schema:
            ref = str(schema["$ref"])
            target = _resolve(root, ref)
            return self._type(target, root, ref.rpartition("/")[2]) if target else "Any"
        for union in ("anyOf", "oneOf"):
            if isinstance(schema.get(union), list):
                return _union(self._type(s, root, name) for s in schema[union])
        if "enum" in schema and all(isinstance(v, (str, int, bool)) for v in schema["enum"]):
            return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
        kind = schema.get("type")
        if isinstance(kind, list):
            return _union(self._type({**schema, "type": k}, root, name) for k in kind)
        if kind == "object" and _is_record(schema):
            return self._typed_dict(schema, root, name)
        if kind == "object":
            values = schema.get("additionalProperties")
            value = self._type(values, root, name + "Value") if isinstance(values, dict) else "Any"
            return f"dict[str, {value}]"
        if kind == "array":
            return f"list[{self._type(schema.get('items'), root, name + 'Item')}]"
        return _JSON_TYPES.get(str(kind), "Any")

    def _typed_dict(self, schema: dict[str, Any], root: dict[str, Any], name: str) -> str:
        drawn = self._named.get(id(schema))
        if drawn is not None:
            self._using.extend(self._needs.get(drawn, [drawn]))  # (itself, if recursive)
            return drawn
        title = _camel(str(schema.get("title") or ""))
        if title.isidentifier() and not keyword.iskeyword(title):
            name = title
        while name in self._taken:
            name += "_"
        self._taken.add(name)
        self._named[id(schema)] = name
        required = set(schema.get("required") or ())
        first = len(self._using)
        fields = {
            key: self._type(value, root, name + _camel(key))
            if key in required
            else f"NotRequired[{self._type(value, root, name + _camel(key))}]"
            for key, value in schema["properties"].items()
        }
        self._needs[name] = [*self._using[first:], name]
        self._using.append(name)
        self.texts[name] = _class_text(name, fields)
        return name


def _class_text(name: str, fields: dict[str, str]) -> str:
    if all(key.isidentifier() and not keyword.iskeyword(key) for key in fields):
        lines = [f"    {key}: {kind}" for key, kind in fields.items()] or ["    pass"]
        return f"class {name}(TypedDict):\n" + "\n".join(lines)
    items = ", ".join(f"{key!r}: {kind}" for key, kind in fields.items())
    return f"{name} = TypedDict({name!r}, {{{items}}})"


def _is_record(schema: Any) -> bool:
    """An object schema with named properties and no others: a ``TypedDict``."""
    return (
        isinstance(schema, dict)
        and schema.get("type") == "object"
        and isinstance(schema.get("properties"), dict)
        and bool(schema["properties"])
        and schema.get("additionalProperties") in (None, False)
    )


def _items(schema: dict[str, Any]) -> Any:
    """The schema of an array's items, its ``$ref`` followed (None: no array)."""
    items = schema.get("items") if schema.get("type") == "array" else None
    if isinstance(items, dict) and "$ref" in items:
        return _resolve(schema, str(items["$ref"]))
    return items


def _resolve(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _union(kinds: Iterable[str]) -> str:
    unique = list(dict.fromkeys(kinds))
    return "Any" if "Any" in unique else " | ".join(unique)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", name) if part)


_JSON_TYPES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "null": "None",
}
# Names a result class must not take: the stub's imports and the builtins.
_TYPING_NAMES = {"Any", "Literal", "NotRequired", "TypedDict", *dir(builtins)}
