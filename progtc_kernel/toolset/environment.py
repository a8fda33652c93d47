"""What a model is told before it writes a script: ``get_execution_environment()``.

The instructions say how to write the script (``run()`` returning a dict; tools
called plainly in ``def run()``, awaited in ``async def run()``), what errors look
like, where printed output goes and what may be imported, then list a typed Python
stub for every tool, with its docstring and, where declared, the JSON schema of
what it returns.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .._stubs import short_name, stubs_source
from ..kernel_side.catalog import one_line
from ..protocol import ToolSpec

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
