"""``tools.catalog``: scripts find the tools they need among hundreds.

Above the size a toolset lists in full (``ProgrammaticToolset(list_tools_above=N)``)
the model sees tools by name and one line, and a script discovers the rest:
``tools.catalog.search("weather")`` ranks the tools by a query, and
``tools.catalog.describe("get_forecast")`` gives a tool's full stub, the very text
the environment shows when it lists every tool. Standard library only: it runs in
the kernel, on what the hosts registered.

Namespaced tools (an MCP upstream given a name) are named ``github.search_issues``
here; a script imports them with ``from tools.github import search_issues``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping

from .._stubs import described, short_name
from ..protocol import ToolSpec

# Above this many tools the environment lists them by name and one line (the default
# of ``list_tools_above``): 30 stubs are about 15,000 characters, which a model's
# context can spare; more crowd out the task.
LIST_TOOLS_ABOVE = 30
# Where the search weighs a word it finds: in a tool's name most, then its parameters.
_NAME, _PARAMETER, _DESCRIPTION = 3.0, 1.5, 1.0
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def one_line(spec: ToolSpec, width: int = 80) -> str:
    """The first line of a tool's description, cut to ``width`` characters."""
    first = next((line.strip() for line in (spec["description"] or "").splitlines() if line), "")
    return first if len(first) <= width else first[: width - 3].rstrip() + "..."


def words(text: str) -> list[str]:
    """``getForecast_daily`` -> ``["get", "forecast", "daily"]``, lower case."""
    return [word.lower() for word in _WORD.findall(text)]


def _matches(query_word: str, word: str) -> bool:
    """The same word, or one a plural or a prefix of the other ("issue", "issues")."""
    if query_word == word:
        return True
    shorter, longer = sorted((query_word, word), key=len)
    return len(shorter) >= 4 and longer.startswith(shorter)


def _fields(spec: ToolSpec) -> list[tuple[float, set[str]]]:
    return [
        (_NAME, set(words(spec["name"]))),
        (_PARAMETER, {w for p in spec["parameters"] for w in words(p["name"])}),
        (_DESCRIPTION, set(words(spec["description"] or ""))),
    ]


def search(specs: Mapping[str, ToolSpec], query: str, limit: int = 10) -> list[str]:
    """The names of the tools that match ``query``, best first (at most ``limit``).

    Each query word counts by where it is found (the name weighs most, then the
    parameters, then the description) and by how rare it is among the tools (a word
    every tool has says little); a query that is a tool's whole name puts it first."""
    if not isinstance(query, str):
        raise TypeError(f"search takes a query string, like search('weather'), not {query!r:.40}")
    wanted = words(query)
    fields = {name: _fields(spec) for name, spec in specs.items()}
    rarity = {word: _rarity(word, fields.values(), len(specs)) for word in set(wanted)}
    scores: dict[str, float] = {}
    for name, weighed in fields.items():
        score = sum(
            rarity[word] * max((w for w, found in weighed if _found(word, found)), default=0.0)
            for word in wanted
        )
        if query.strip().lower() in (name.lower(), short_name(name).lower()):
            score += 100.0
        if score > 0:
            scores[name] = score
    return sorted(scores, key=lambda n: (-scores[n], len(n), n))[: max(limit, 0)]


def _found(word: str, found: set[str]) -> bool:
    return word in found or any(_matches(word, other) for other in found)


def _rarity(word: str, fields: Iterable[list[tuple[float, set[str]]]], count: int) -> float:
    having = sum(1 for weighed in fields if any(_found(word, found) for _, found in weighed))
    return math.log(1 + count / having) if having else 0.0


class Catalog:
    """``tools.catalog``: search the tools the hosts serve, and describe one.

    Example:
        ```python
        from tools import catalog

        names = catalog.search("weather forecast")  # best first
        print(catalog.describe(names[0]))  # its stub: signature, docstring, returns
        ```

    Args:
        specs: Returns the tools served now, by name (namespaced: ``github.x``).
        asks_approval: Returns the names of the tools whose calls need approval.
    """

    def __init__(
        self,
        specs: Callable[[], dict[str, ToolSpec]],
        asks_approval: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        self._specs = specs
        self._asks_approval = asks_approval

    def search(self, query: str, limit: int = 10) -> list[str]:
        """The names of the tools matching ``query`` (words of a tool's name,
        parameters or description), best first.

        Args:
            query: Words to look for, e.g. ``"weather forecast"``.
            limit: How many names at most.

        Returns:
            Tool names as scripts call them (``github.search_issues`` for a tool of
            the ``github`` namespace: ``from tools.github import search_issues``).
        """
        return search(self._specs(), query, limit)

    def describe(self, name: str) -> str:
        """The full stub of tool ``name``: its signature, docstring and what it returns
        (after the ``TypedDict`` of its result), as the full listing shows it.

        Args:
            name: A tool's name, as ``search`` gives it.

        Raises:
            LookupError: No tool has that name; the message suggests near ones.
        """
        specs = self._specs()
        spec = specs.get(name)
        if spec is None:
            near = search(specs, name, 5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise LookupError(f"no tool named {name!r}{hint} (find tools with catalog.search)")
        return described(list(specs.values()), name, name in self._asks_approval())

    def __len__(self) -> int:
        return len(self._specs())

    def __repr__(self) -> str:
        return (
            f"<tools.catalog: {len(self)} tools; catalog.search('words') finds some, "
            "catalog.describe('name') shows one>"
        )
