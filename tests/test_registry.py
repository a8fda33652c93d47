"""Tool definitions on the host: names, schemas and errors that name the fix."""

from __future__ import annotations

import functools
from typing import Annotated, Literal

import pydantic
import pytest

from progtc_kernel import Tool, ToolDefinitionError, ToolRegistry


async def convert(amount: float, to: Literal["EUR", "USD"] = "EUR") -> float:
    """Convert an amount."""
    return amount


def search(query: Annotated[str, pydantic.Field(min_length=2)], *tags: str,
           limit: int = 10, **filters: bool) -> list[str]:
    return [query, *tags]


def test_a_tool_describes_itself() -> None:
    tool = Tool.from_function(convert)
    spec = tool.spec()
    assert spec["name"] == "convert"
    assert spec["description"] == "Convert an amount."
    assert spec["returns"] == "float"
    assert [(p["name"], p["annotation"], p["default_repr"]) for p in spec["parameters"]] == [
        ("amount", "float", None), ("to", "Literal['EUR', 'USD']", "'EUR'")]
    assert spec["input_schema"]["properties"]["to"]["enum"] == ["EUR", "USD"]
    assert spec["output_schema"] == {"type": "number"}


async def test_calls_validate_and_spread_arguments() -> None:
    tool = Tool.from_function(search)
    result = await tool.call({"query": "spa", "tags": ["a", "b"], "filters": {"open": True}})
    assert result == {"ok": True, "value": ["spa", "a", "b"]}
    result = await tool.call({"query": "x"})
    assert result["ok"] is False
    assert result["error"]["kind"] == "arguments"
    assert "query: String should have at least 2 characters" in result["error"]["message"]


async def test_a_registry_reports_unknown_tools() -> None:
    registry = ToolRegistry([convert, search])
    result = await registry.call("nope", {})
    assert result["error"]["message"] == "no tool named 'nope'; available tools: convert, search"


def test_bad_definitions_name_the_fix() -> None:
    with pytest.raises(ToolDefinitionError, match=r"tools=\{'lookup': my_callable\}"):
        ToolRegistry([lambda x: x])
    with pytest.raises(ToolDefinitionError, match="two tools are named 'convert'"):
        ToolRegistry([convert, convert])
    with pytest.raises(ToolDefinitionError, match="is not callable"):
        ToolRegistry({"x": 42})


def test_partials_and_callable_objects_are_tools() -> None:
    class Lookup:
        async def __call__(self, key: str) -> str:
            return key

    registry = ToolRegistry({"lookup": Lookup(), "eur": functools.partial(convert, to="EUR")})
    assert registry["lookup"].is_async and registry["eur"].is_async
    assert list(registry["lookup"].input_schema["properties"]) == ["key"]
