"""What a model is told before it writes a script: ``get_execution_environment()``.

The instructions say how to write the script (``run()`` returning a dict; tools
called plainly in ``def run()``, awaited in ``async def run()``), what errors look
like, where printed output goes and what may be imported, then list a typed Python
stub for every tool, with its docstring and, where declared, the JSON schema of
what it returns.
"""

from __future__ import annotations

import builtins
import json
import keyword
import re
import textwrap
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from ..kernel_side.catalog import one_line, short_name
from ..protocol import ToolSpec, signature_of

# Modules a script may import by default: pure computation, no files, processes or
# network. A guard-rail for models, not a sandbox.
DEFAULT_MODULES: dict[str, str] = {
    "asyncio": "concurrency: `await asyncio.gather(...)` runs tool calls at once "
    "(inside `async def run()`)",
    "json": "encode and decode JSON",
    "base64": "decode the base64 `data` of images and files that tools return",
    "math": "mathematical functions",
    "re": "regular expressions",
    "datetime": "dates, times and time deltas",
    "collections": "Counter, defaultdict, deque, namedtuple, OrderedDict",
    "itertools": "iterator building blocks (chain, groupby, islice, product...)",
    "functools": "reduce, partial, lru_cache, cmp_to_key",
    "statistics": "mean, median, stdev and other statistics",
    "operator": "itemgetter, attrgetter and operators as functions",
    "heapq": "heaps: nlargest, nsmallest, merge",
    "bisect": "binary search in sorted lists",
    "string": "string constants and templates",
    "textwrap": "wrap, shorten and dedent text",
    "decimal": "exact decimal arithmetic",
    "fractions": "rational numbers",
    "random": "pseudo-random numbers",
    "copy": "shallow and deep copies",
    "dataclasses": "simple record classes",
    "typing": "type annotations",
    "enum": "enumerations",
    "uuid": "unique identifiers",
    "zoneinfo": "time zones",
}


# The contract's ProgrammaticApiExecutionEnvironmentInfo.
ENVIRONMENT_SCHEMA: dict[str, Any] = {
    "properties": {
        "instructions": {"type": "string"},
        "language": {"type": "string"},
        "supported_modules": {
            "items": {
                "properties": {"description": {"type": "string"}, "name": {"type": "string"}},
                "required": ["description", "name"],
                "title": "ProgrammaticApiSupportedModule",
                "type": "object",
            },
            "type": "array",
        },
    },
    "required": ["instructions", "supported_modules", "language"],
    "title": "ProgrammaticApiExecutionEnvironmentInfo",
    "type": "object",
}


def modules_of(supported: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """The supported modules, by name with a description; ``None``: the defaults."""
    if supported is None:
        return dict(DEFAULT_MODULES)
    if isinstance(supported, Mapping):
        named = {str(name): str(text) for name, text in supported.items()}
    else:
        named = {str(name): DEFAULT_MODULES.get(str(name), "") for name in supported}
    for name in named:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"{name!r} is not a module name")
    return named


# What the instructions say about approval: the tools each of whose calls needs it,
# and whether calls of other tools may need it too (by their arguments).
ApprovalNote = tuple[list[str], bool]


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
    checks scripts against."""
    if not specs:
        return "# no tools are available"
    results = ResultTypes({short_name(spec["name"]) for spec in specs})
    returns = {spec["name"]: results.of(spec) for spec in specs}
    parts: list[str] = []
    namespace = ""
    # in the order given, the namespaced ones after, by namespace (a stable sort)
    for spec in sorted(specs, key=lambda spec: spec["name"].rpartition(".")[0]):
        space = spec["name"].rpartition(".")[0]
        if space != namespace:
            namespace = space
            parts.append(f"# tools.{space}: from tools.{space} import {short_name(spec['name'])}")
        parts.append(stub(spec, spec["name"] in asking, returns[spec["name"]]))
    return "\n\n".join([*results.classes, *parts])


class ResultTypes:
    """``TypedDict`` classes for tools' object output schemas, named after the schema's
    title (else the tool's), nested objects and ``$defs`` included."""

    def __init__(self, taken: Iterable[str]) -> None:
        self.classes: list[str] = []
        self._taken = set(taken) | _TYPING_NAMES
        self._named: dict[int, str] = {}  # id(schema) -> its class, drawn once

    def of(self, spec: ToolSpec) -> str | None:
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
            return drawn
        title = _camel(str(schema.get("title") or ""))
        if title.isidentifier() and not keyword.iskeyword(title):
            name = title
        while name in self._taken:
            name += "_"
        self._taken.add(name)
        self._named[id(schema)] = name
        required = set(schema.get("required") or ())
        fields = {
            key: self._type(value, root, name + _camel(key))
            if key in required
            else f"NotRequired[{self._type(value, root, name + _camel(key))}]"
            for key, value in schema["properties"].items()
        }
        self.classes.append(_class_text(name, fields))
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


NEEDS_APPROVAL = "Needs approval: each call waits until a person allows or denies it."


def approval_text(note: ApprovalNote | None) -> str:
    """What the instructions say about calls that need approval ('' when none may)."""
    names, others = note or ([], False)
    if not names and not others:
        return ""
    listed = ", ".join(f"`{name}`" for name in names)
    if names and others:
        which = f"Calls of {listed} (and of other tools, depending on their arguments)"
    elif names:
        which = f"Calls of {listed}"
    else:
        which = "Some tool calls (depending on the tool and its arguments)"
    return textwrap.fill(
        f"{which} need a person's approval: such a call waits until it is allowed, then "
        "returns as usual. A denied call raises `ToolDeniedError` (a `ToolError` and a "
        "`PermissionError`; import it from `tools`) whose message says why; catch it to "
        "carry on without that result (e.g. return what was denied), or let the script "
        "fail with it.",
        88,
    )


def instructions(
    specs: list[ToolSpec],
    modules: Mapping[str, str],
    *,
    max_tool_calls: int | None,
    timeout: float | None,
    fresh_namespace: bool,
    max_output_chars: int | None,
    max_result_chars: int,
    approval: ApprovalNote | None = None,
    list_tools_above: int | None = None,
) -> str:
    """``max_output_chars``: how much printed text the caller returns; ``None``: it
    returns none. ``approval``: which calls need approval. ``list_tools_above``: with
    more tools than this, they are listed by name and one line, and scripts find the
    rest with ``tools.catalog`` (``None``: every stub is listed)."""
    by_catalog = list_tools_above is not None and len(specs) > list_tools_above
    names = (
        f"{len(specs):,} tools, listed below"
        if by_catalog or len(specs) > 50
        else ", ".join(spec["name"] for spec in specs) or "(none)"
    )
    first_name = specs[0]["name"] if specs else "some_tool"
    first = short_name(first_name)
    module = f"tools.{first_name.rpartition('.')[0]}" if "." in first_name else "tools"
    limits = [
        f"it may run for at most {timeout:g} s" if timeout else None,
        f"it may make at most {max_tool_calls} tool calls" if max_tool_calls else None,
    ]
    stated = " and ".join(limit for limit in limits if limit)
    asking = set(approval[0]) if approval else set()
    listed = (
        catalog_listing(specs)
        if by_catalog
        else f"""\
The tools, as Python stubs (with the JSON schema of what a tool returns, where known):

```python
{stubs_source(specs, asking)}
```
"""
    )
    approvals = approval_text(approval)
    printed = (
        "Text the script prints is not returned to you: put what you need in the returned dict."
        if max_output_chars is None
        else "Text the script prints is returned to you after the return value (at "
        f"most {max_output_chars:,} characters); put what you need in the "
        "returned dict. What it shows with `display(...)` (a builtin: an image, a "
        "table's HTML) and the plots it leaves open come back to you too, images as "
        "images."
    )
    return f"""\
Write a Python script that defines `run()` and returns a dict. The script runs in a
Python kernel; the dict comes back to you as JSON (use only str, int, float, bool,
None, lists and dicts with string keys). Use the script to call several tools, combine
their results in code and return only what you need.

Call the tools by importing them from the `tools` module ({names}).
In a plain `def run()`, each call returns its result:

    from {module} import {first}

    def run():
        result = {first}(...)
        return {{"result": result}}

In `async def run()`, await each call; `asyncio.gather` runs calls at the same time:

    import asyncio
    from {module} import {first}

    async def run():
        results = await asyncio.gather({first}(...), {first}(...))
        return {{"results": results}}

A tool that fails raises `ToolError` (import it from `tools`; `ToolArgumentError`
when the arguments do not fit the tool, `ToolTimeoutError` when it takes too long).
Catch it to carry on without that result; uncaught, the script fails with it.
{f"{approvals}{chr(10)}" if approvals else ""}\
The script fails with SyntaxError for invalid syntax, with ValueError when it imports a
module that is not supported or defines no `run()`, with TypeError when `run()` returns
something that is not a dict, and with any other exception it raises; each error names
the line of the script.

{textwrap.fill(printed, 88)} The returned JSON is cut after {max_result_chars:,}
characters: return what you need, not everything the tools gave.
{
        "Each script starts with a fresh namespace."
        if fresh_namespace
        else "Names defined by one script are still there for the next one."
    }\
{f" Limits: {stated}." if stated else ""}

Only these modules can be imported (besides `tools`):
{chr(10).join(f"- {name}: {text}" if text else f"- {name}" for name, text in modules.items())}

{listed}"""


# How much of the environment a long tool list may take: tools are listed with their
# one line while they fit, then by name, then only counted (the catalog finds them).
CATALOG_LISTING_CHARS = 4_000


def catalog_listing(specs: list[ToolSpec]) -> str:
    """The tools by name and one line, and how scripts find and read the rest."""
    names = sorted(spec["name"] for spec in specs)
    example = next((name for name in names if "." in name), None)
    namespaced = (
        f"A tool named `space.name` (e.g. `{example}`) is imported with "
        "`from tools.space import name`. "
        if example
        else ""
    )
    lines: list[str] = []
    used = 0
    for spec in sorted(specs, key=lambda spec: spec["name"]):
        line = f"- {spec['name']}: {one_line(spec)}" if spec["description"] else f"- {spec['name']}"
        if used + len(line) > CATALOG_LISTING_CHARS:
            break
        lines.append(line)
        used += len(line) + 1
    rest = len(specs) - len(lines)
    namespaces = Counter(name.partition(".")[0] for name in names if "." in name)
    if rest:
        spaces = ", ".join(
            f"tools.{space} ({count})" for space, count in sorted(namespaces.items())
        )
        lines.append(
            f"- ... and {rest:,} more tools"
            + (f" (namespaces: {spaces})" if spaces else "")
            + ": find them with catalog.search"
        )
    return f"""\
There are {len(specs):,} tools, too many to show each one's stub here. Find the ones you
need with a script first, then call them in the next script: `catalog.search(words)`
returns the names of the matching tools, best first, and `catalog.describe(name)`
returns a tool's full stub (its signature, docstring and the JSON schema of what it
returns) as text:

    from tools import catalog

    def run():
        names = catalog.search("weather forecast")
        return {{"tools": {{name: catalog.describe(name) for name in names[:3]}}}}

{namespaced}The tools, by name and one line:

{chr(10).join(lines)}
"""


def environment(specs: list[ToolSpec], modules: Mapping[str, str], **limits: Any) -> dict[str, Any]:
    """The contract's ``ProgrammaticApiExecutionEnvironmentInfo``."""
    return {
        "instructions": instructions(specs, modules, **limits),
        "language": "python",
        "supported_modules": [
            {"name": name, "description": text} for name, text in modules.items()
        ],
    }
