"""A toolset of many tools: the environment lists them by name and one line, and
scripts find what they need with ``tools.catalog``, on a real kernel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest
from typing_extensions import TypedDict

from progtc_kernel import LocalKernel, ProgrammaticToolset, Tool, ToolKernel
from progtc_kernel._stubs import stub, stubs_source
from progtc_kernel.exceptions import ToolDefinitionError
from progtc_kernel.kernel_side.catalog import search


def tool(name: str, description: str, **parameters: str) -> Tool:
    """A tool as an MCP server describes one: a JSON schema, a description."""
    schema = {
        "type": "object",
        "properties": {p: {"type": kind} for p, kind in parameters.items()},
        "required": list(parameters),
    }

    async def call(arguments: dict[str, Any]) -> Any:
        return {"tool": name, "arguments": arguments}

    return Tool.from_schema(name, schema, call, description=description)


TOOLS = [
    tool("get_forecast", "Weather forecast for a city, day by day.", city="string", days="integer"),
    tool("get_alerts", "Severe weather alerts for a US state.", state="string"),
    tool("search_issues", "Search issues and pull requests of a repository.", query="string"),
    tool("create_issue", "Open a new issue in a repository.", repo="string", title="string"),
    tool("list_commits", "Commits of a branch, newest first.", repo="string", branch="string"),
    tool("send_email", "Send an email to one recipient.", to="string", body="string"),
    tool("convert_currency", "Convert an amount between currencies.", amount="number"),
    tool("weather.history", "Past weather of a city (namespaced).", city="string", year="integer"),
]


@pytest.fixture(scope="module")
async def toolset(kernel_python: str) -> AsyncIterator[ProgrammaticToolset]:
    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    async with ProgrammaticToolset(TOOLS, kernel=kernel, list_tools_above=3) as toolset:
        yield toolset


async def run(toolset: ProgrammaticToolset, script: str) -> Any:
    return json.loads(await toolset.execute_tool_script(script))


# -- the environment ----------------------------------------------------------------


@pytest.mark.fast
async def test_above_the_size_the_environment_lists_names_and_one_line() -> None:
    toolset = ProgrammaticToolset(TOOLS, list_tools_above=3)
    instructions = (await toolset.get_execution_environment())["instructions"]
    assert "- get_forecast: Weather forecast for a city, day by day." in instructions
    assert "- weather.history: Past weather of a city (namespaced)." in instructions
    assert "def get_forecast(" not in instructions  # no stubs
    assert 'catalog.search("weather forecast")' in instructions
    assert "catalog.describe(name)" in instructions
    assert "from tools.space import name" in instructions


@pytest.mark.fast
async def test_at_or_below_the_size_every_stub_is_listed() -> None:
    for above in (None, len(TOOLS)):
        toolset = ProgrammaticToolset(TOOLS, list_tools_above=above)
        instructions = (await toolset.get_execution_environment())["instructions"]
        assert "def get_forecast(city: str, days: int)" in instructions
        assert "catalog.search" not in instructions
        # a namespaced tool under the import that reaches it
        assert "# tools.weather: from tools.weather import history\n\ndef history(" in (
            instructions
        )


@pytest.mark.fast
async def test_the_default_lists_small_toolsets_in_full_and_large_ones_by_name() -> None:
    assert ProgrammaticToolset(TOOLS).list_tools_above == 30
    many = [tool(f"tool_{n}", f"Tool number {n}.", x="string") for n in range(31)]
    instructions = (await ProgrammaticToolset(many).get_execution_environment())["instructions"]
    assert "- tool_7: Tool number 7." in instructions
    assert "def tool_7(" not in instructions


@pytest.mark.fast
async def test_a_very_long_list_is_cut_and_the_rest_counted() -> None:
    many = [tool(f"ns.tool_{n:04}", "A tool. " * 20, x="string") for n in range(1000)]
    instructions = (await ProgrammaticToolset(many).get_execution_environment())["instructions"]
    assert "more tools (namespaces: tools.ns (1000)): find them with catalog.search" in (
        instructions
    )
    assert len(instructions) < 12_000


@pytest.mark.fast
def test_a_negative_size_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="give 0 or more tools"):
        ProgrammaticToolset(TOOLS, list_tools_above=-1)


# -- the reserved name ----------------------------------------------------------------


@pytest.mark.fast
def test_no_tool_may_be_named_catalog() -> None:
    def catalog(query: str) -> list[str]:
        return []

    with pytest.raises(ToolDefinitionError, match="tool catalog scripts search"):
        ProgrammaticToolset([catalog])
    with pytest.raises(ToolDefinitionError, match="tool catalog scripts search"):
        tool("catalog.search", "a namespace named catalog", q="string")


@pytest.mark.fast
def test_a_namespace_cannot_also_be_a_tool() -> None:
    with pytest.raises(ToolDefinitionError, match="names both a tool and the namespace"):
        ProgrammaticToolset([tool("weather", "w", city="string"), *TOOLS])


# -- search ranking (the kernel's function, run here on the same specs) ------------------


@pytest.mark.fast
def test_search_ranks_names_over_parameters_over_descriptions() -> None:
    specs = {spec["name"]: spec for spec in (t.spec() for t in TOOLS)}
    assert search(specs, "weather")[:3] == ["weather.history", "get_alerts", "get_forecast"]
    assert search(specs, "issue")[:2] == ["create_issue", "search_issues"]
    assert search(specs, "search_issues")[0] == "search_issues"  # a whole name first
    assert search(specs, "repo")[:3] == ["create_issue", "list_commits", "search_issues"]
    assert search(specs, "email")[0] == "send_email"
    assert search(specs, "zebra") == []
    assert len(search(specs, "a", limit=2)) <= 2


# -- in the kernel ----------------------------------------------------------------------


async def test_scripts_search_the_catalog_best_first(toolset: ProgrammaticToolset) -> None:
    found = await run(
        toolset,
        """\
from tools import catalog

def run():
    return {"weather": catalog.search("weather"), "two": catalog.search("issue", limit=2)}
""",
    )
    assert found == {
        "weather": ["weather.history", "get_alerts", "get_forecast"],
        "two": ["create_issue", "search_issues"],
    }


async def test_describe_gives_the_stub_the_full_listing_shows(
    toolset: ProgrammaticToolset,
) -> None:
    described = await run(
        toolset,
        """\
import tools

def run():
    return {name: tools.catalog.describe(name) for name in ("get_forecast", "weather.history")}
""",
    )
    full = ProgrammaticToolset(TOOLS, list_tools_above=None)
    instructions = (await full.get_execution_environment())["instructions"]
    for name, text in described.items():
        assert text == stub(toolset.tools[name].spec())
        assert text in instructions
    assert described["get_forecast"].startswith("def get_forecast(city: str, days: int)")
    assert stubs_source([toolset.tools["get_alerts"].spec()]) in instructions


class Hotel(pydantic.BaseModel):
    name: str
    stars: int


class Forecast(TypedDict):
    city: str
    highs: list[float]


def find_hotels(city: str, limit: int = 3) -> list[Hotel]:
    """Hotels in a city, best first."""
    return [Hotel(name=f"{city} Hotel {i}", stars=5 - i) for i in range(limit)]


def forecast(city: str) -> Forecast:
    """The week's highs in a city."""
    return {"city": city, "highs": [20.5] * 7}


async def test_describe_shows_a_typed_result_as_the_full_listing_does(
    kernel_python: str,
) -> None:
    typed = [find_hotels, forecast, *TOOLS]
    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    async with ProgrammaticToolset(typed, kernel=kernel, list_tools_above=1) as toolset:
        described = await run(
            toolset,
            """\
from tools import catalog

def run():
    return {name: catalog.describe(name) for name in ("find_hotels", "forecast")}
""",
        )
        hotel = find_hotels("Oslo", 1)[0]  # what a script gets: the JSON of a Hotel
        hotels = await run(
            toolset,
            "from tools import find_hotels\n\ndef run():\n    return find_hotels('Oslo', 1)[0]",
        )
    full = ProgrammaticToolset(typed, list_tools_above=None)
    listing = (await full.get_execution_environment())["instructions"]
    assert described["find_hotels"].startswith("class Hotel(TypedDict):\n    name: str\n")
    assert (
        "\ndef find_hotels(city: str, limit: int = 3) -> list[Hotel]:" in (described["find_hotels"])
    )
    assert described["forecast"].startswith("class Forecast(TypedDict):")
    assert "\ndef forecast(city: str) -> Forecast:" in described["forecast"]
    for text in described.values():
        for part in text.split("\n\n"):  # each class, then the stub: as listed
            assert part in listing
    assert hotels == hotel.model_dump()


async def test_describing_an_unknown_tool_suggests_near_names(
    toolset: ProgrammaticToolset,
) -> None:
    answer = await run(
        toolset,
        """\
from tools import catalog

def run():
    try:
        catalog.describe("forecast")
    except LookupError as exc:
        return {"error": str(exc)}
""",
    )
    assert answer == {
        "error": "no tool named 'forecast'; did you mean get_forecast? (find tools with "
        "catalog.search)"
    }


async def test_a_found_tool_is_called_like_any_other(toolset: ProgrammaticToolset) -> None:
    answer = await run(
        toolset,
        """\
import tools
from tools.weather import history

def run():
    best = tools.catalog.search("forecast")[0]
    return {"found": getattr(tools, best)(city="Oslo", days=2), "past": history("Oslo", 1990),
            "same": tools.weather.history is history}
""",
    )
    assert answer == {
        "found": {"tool": "get_forecast", "arguments": {"city": "Oslo", "days": 2}},
        "past": {"tool": "weather.history", "arguments": {"city": "Oslo", "year": 1990}},
        "same": True,
    }
