"""Tool definitions on the host: names, schemas, validation and errors that name the fix."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import functools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from progtc_kernel import Tool, ToolDefinitionError, ToolRegistry, load_tools
from progtc_kernel.host.tools import Outcome

pytestmark = pytest.mark.fast


async def convert(amount: float, to: Literal["EUR", "USD"] = "EUR") -> float:
    """Convert an amount."""
    return amount


def search(
    query: Annotated[str, pydantic.Field(min_length=2)],
    *tags: str,
    limit: int = 10,
    **filters: bool,
) -> list[str]:
    return [query, *tags]


class Hotel(pydantic.BaseModel):
    name: str
    stars: int


@dataclasses.dataclass
class Room:
    number: int
    free_from: dt.date


class Price(TypedDict):
    amount: float
    currency: str


def hotel() -> Hotel:
    return Hotel(name="Palace", stars=5)


def rooms() -> list[Room]:
    return [Room(101, dt.date(2026, 1, 1))]


def price() -> Price:
    return {"amount": 1.5, "currency": "EUR"}


def value(outcome: Outcome) -> Any:
    assert outcome.ok, outcome.error
    return json.loads(outcome.value_json)


def test_a_tool_describes_itself() -> None:
    tool = Tool.from_function(convert)
    spec = tool.spec()
    assert spec["name"] == "convert"
    assert spec["description"] == "Convert an amount."
    assert spec["returns"] == "float"
    assert [(p["name"], p["annotation"], p["default_repr"]) for p in spec["parameters"]] == [
        ("amount", "float", None),
        ("to", "Literal['EUR', 'USD']", "'EUR'"),
    ]
    assert spec["input_schema"]["properties"]["to"]["enum"] == ["EUR", "USD"]
    assert spec["output_schema"] == {"type": "number"}


def test_models_dataclasses_and_typeddicts_have_their_real_output_schemas() -> None:
    hotel_schema = Tool.from_function(hotel).output_schema
    assert hotel_schema is not None and hotel_schema["title"] == "Hotel"
    assert hotel_schema["properties"]["stars"] == {"title": "Stars", "type": "integer"}
    rooms_schema = Tool.from_function(rooms).output_schema
    assert rooms_schema is not None and rooms_schema["type"] == "array"
    assert rooms_schema["$defs"]["Room"]["properties"]["free_from"]["format"] == "date"
    price_schema = Tool.from_function(price).output_schema
    assert price_schema is not None and price_schema["required"] == ["amount", "currency"]


async def test_calls_validate_and_spread_arguments() -> None:
    tool = Tool.from_function(search)
    outcome = await tool.call({"query": "spa", "tags": ["a", "b"], "filters": {"open": True}})
    assert value(outcome) == ["spa", "a", "b"]
    outcome = await tool.call({"query": "x"})
    assert outcome.error is not None and outcome.error["kind"] == "arguments"
    assert "query: String should have at least 2 characters" in outcome.error["message"]


async def test_results_are_checked_against_the_return_type() -> None:
    def count() -> int:
        return "many"  # type: ignore[return-value]

    outcome = await Tool.from_function(count).call({})
    assert outcome.error is not None and outcome.error["kind"] == "result"
    assert "does not match its return type int" in outcome.error["message"]
    assert "fix the tool or its return annotation" in outcome.error["message"]


async def test_results_that_json_cannot_carry_fail_at_once() -> None:
    def broken_text() -> str:
        return "bad \udc80 surrogate"

    outcome = await Tool.from_function(broken_text).call({})
    assert outcome.error is not None and outcome.error["kind"] == "result"
    assert "lone surrogate" in outcome.error["message"]
    assert json.loads(outcome.entry(7))["id"] == 7  # the error itself still travels


async def test_a_registry_reports_unknown_tools() -> None:
    registry = ToolRegistry([convert, search])
    outcome = await registry.call("nope", {})
    assert outcome.error is not None
    assert outcome.error["message"] == "no tool named 'nope'; available tools: convert, search"


def test_a_mapping_key_names_the_tool_whatever_the_value() -> None:
    registry = ToolRegistry({"alias": Tool.from_function(convert), "other": search})
    assert sorted(registry) == ["alias", "other"]
    assert registry["alias"].spec()["name"] == "alias"
    assert registry["other"].spec()["name"] == "other"


def test_bad_definitions_name_the_fix() -> None:
    with pytest.raises(ToolDefinitionError, match=r"tools=\{'lookup': my_callable\}"):
        ToolRegistry([lambda x: x])
    with pytest.raises(ToolDefinitionError, match="two tools are named 'convert'"):
        ToolRegistry([convert, convert])
    with pytest.raises(ToolDefinitionError, match="is not callable"):
        ToolRegistry({"x": 42})


class Connection:
    """Not something JSON can carry."""


def test_types_json_cannot_carry_are_refused_when_the_tool_is_defined() -> None:
    def use(conn: Connection, n: int) -> int:
        return n

    def make() -> Connection:
        return Connection()

    with pytest.raises(
        ToolDefinitionError,
        match=r"tool 'use': parameter 'conn': its type "
        r".*Connection cannot travel as JSON.*JSON-friendly type",
    ):
        Tool.from_function(use)
    with pytest.raises(
        ToolDefinitionError,
        match=r"tool 'make': its return type .*Connection "
        r"cannot travel as JSON.*or leave it unannotated",
    ):
        Tool.from_function(make)


def test_partials_and_callable_objects_are_tools() -> None:
    class Lookup:
        async def __call__(self, key: str) -> str:
            return key

    registry = ToolRegistry({"lookup": Lookup(), "eur": functools.partial(convert, to="EUR")})
    lookup, eur = registry["lookup"], registry["eur"]
    assert getattr(lookup, "is_async", False) and getattr(eur, "is_async", False)
    assert list(lookup.input_schema["properties"]) == ["key"]


async def test_system_exit_and_keyboard_interrupt_become_tool_errors() -> None:
    def cli(flag: str) -> None:
        argparse.ArgumentParser(prog="cli").parse_args([flag])

    async def stop() -> None:
        raise KeyboardInterrupt

    registry = ToolRegistry([cli, stop])
    outcome = await registry.call("cli", {"flag": "--nope"})
    assert outcome.error is not None and outcome.error["type"] == "SystemExit"
    outcome = await registry.call("stop", {})
    assert outcome.error is not None and outcome.error["type"] == "KeyboardInterrupt"


async def test_the_hosts_own_cancellation_still_cancels() -> None:
    started = asyncio.Event()

    async def wait() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(Tool.from_function(wait).call({}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- tools described by a JSON schema (how MCP and agent tools arrive) ----------------

FORECAST_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "minimum": 1, "default": 3},
        "units": {"enum": ["metric", "imperial"]},
        "from": {"type": "string"},
    },
    "required": ["city"],
}


async def forecast(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"city": arguments["city"], "days": arguments.get("days", 3)}


def test_a_schema_tool_gets_a_signature_from_its_schema() -> None:
    tool = Tool.from_schema(
        "forecast",
        FORECAST_SCHEMA,
        forecast,
        description="A forecast.",
        output_schema={"type": "object"},
    )
    spec = tool.spec()
    assert [
        (p["name"], p["kind"], p["annotation"], p["default_repr"]) for p in spec["parameters"]
    ] == [
        ("city", "positional_or_keyword", "str", None),
        ("days", "positional_or_keyword", "int", "3"),
        ("units", "positional_or_keyword", "Literal['metric', 'imperial']", "..."),
        ("arguments", "var_keyword", None, None),  # `from` is no Python name
    ]
    assert spec["returns"] == "dict" and spec["description"] == "A forecast."
    assert spec["input_schema"] == FORECAST_SCHEMA


async def test_a_schema_tool_checks_arguments_and_results_against_its_schemas() -> None:
    ran: list[dict[str, Any]] = []

    def record(arguments: dict[str, Any]) -> str:
        ran.append(arguments)
        return "not an object"

    registry = ToolRegistry(
        [
            Tool.from_schema("forecast", FORECAST_SCHEMA, forecast),
            Tool.from_schema("record", FORECAST_SCHEMA, record, output_schema={"type": "object"}),
        ]
    )
    assert value(await registry.call("forecast", {"city": "Oslo"})) == {"city": "Oslo", "days": 3}
    outcome = await registry.call("forecast", {"days": 0})
    assert outcome.error is not None and outcome.error["kind"] == "arguments"
    assert "'city' is a required property" in outcome.error["message"]
    assert "days: 0 is less than the minimum of 1" in outcome.error["message"]
    outcome = await registry.call("record", {"city": "Oslo"})
    assert outcome.error is not None and outcome.error["kind"] == "result"
    assert "does not match its output schema" in outcome.error["message"]
    assert ran == [{"city": "Oslo"}]


def test_a_bad_schema_is_refused_when_the_tool_is_defined() -> None:
    with pytest.raises(ToolDefinitionError, match="input schema is not a valid JSON schema"):
        Tool.from_schema("x", {"type": "object", "properties": 3}, forecast)
    with pytest.raises(ToolDefinitionError, match="must describe an object"):
        Tool.from_schema("x", {"type": "string"}, forecast)


# -- tools from a module, as --tools takes them ---------------------------------------


def test_a_module_serves_its_public_functions_not_its_classes(tmp_path: Path) -> None:
    # json's __all__ names its functions and its classes (JSONDecoder, JSONDecodeError).
    assert sorted(load_tools(["json"])) == ["dump", "dumps", "load", "loads"]
    shapes = tmp_path / "shapes.py"
    shapes.write_text(
        "class Square:\n"
        "    def __init__(self, side: float) -> None:\n"
        "        self.side = side\n"
        "def area(side: float) -> float:\n"
        "    return side * side\n"
    )
    assert sorted(load_tools([str(shapes)])) == ["area"]
    # A class is a tool only when the module lists it in TOOLS.
    shapes.write_text(shapes.read_text() + "TOOLS = [Square, area]\n")
    listed = tmp_path / "listed.py"
    listed.write_text(shapes.read_text())
    assert sorted(load_tools([str(listed)])) == ["Square", "area"]
