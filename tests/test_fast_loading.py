"""Tools from files and modules (``--tools``), and tools named elsewhere given Python
names: what is served, and errors that say what to do."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import ToolDefinitionError
from progtc_kernel.host.loading import load_tools
from progtc_kernel.host.naming import ForeignTool, foreign_tools, is_python_name, python_name

pytestmark = pytest.mark.fast


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working folder; modules imported from it are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(folder: Path, name: str, source: str) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return str(path)


async def test_a_files_own_public_functions_are_its_tools(folder: Path) -> None:
    source = write(
        folder,
        "hotel_tools.py",
        """\
        from json import dumps  # imported: not a tool
        import os

        def find_hotels(city: str) -> list[str]:
            return [city + " Palace"]

        async def book(hotel: str) -> str:
            return "booked " + hotel

        def _helper() -> None: ...

        RATE = 1.5
        """,
    )
    tools = load_tools([source])
    assert list(tools) == ["find_hotels", "book"]
    outcome = await tools.call("book", {"hotel": "Ritz"})
    assert outcome.value_json == b'"booked Ritz"'


def test_tools_lists_the_tools_and_may_name_them(folder: Path) -> None:
    listed = write(
        folder,
        "listed.py",
        """\
        def a() -> int: return 1
        def b() -> int: return 2
        TOOLS = [a]
        """,
    )
    named = write(
        folder,
        "named.py",
        """\
        def lookup() -> int: return 1
        TOOLS = {"find": lookup}
        """,
    )
    assert list(load_tools([listed])) == ["a"]
    assert list(load_tools([named])) == ["find"]


def test_all_names_the_tools_when_there_is_no_tools_list(folder: Path) -> None:
    source = write(
        folder,
        "exported.py",
        """\
        from math import sqrt
        def shown() -> int: return 1
        def hidden() -> int: return 2
        __all__ = ["shown", "sqrt", "CONSTANT"]
        CONSTANT = 3
        """,
    )
    assert list(load_tools([source])) == ["shown", "sqrt"]


def test_a_module_name_imports_from_the_working_folder_and_files_import_siblings(
    folder: Path,
) -> None:
    write(folder, "shared_helpers_for_tools.py", "def double(x: int) -> int: return 2 * x\n")
    write(folder, "pkg_for_tools/__init__.py", "")
    write(
        folder,
        "pkg_for_tools/weather.py",
        """\
        from shared_helpers_for_tools import double
        def forecast(days: int) -> int: return double(days)
        """,
    )
    assert list(load_tools(["pkg_for_tools.weather"])) == ["forecast"]
    in_sub = write(
        folder,
        "sub/uses_sibling.py",
        """\
        from sibling_of_tools import base
        def total() -> int: return base()
        """,
    )
    write(folder, "sub/sibling_of_tools.py", "def base() -> int: return 1\n")
    assert list(load_tools([in_sub])) == ["total"]


def test_files_are_imported_under_private_names_shadowing_nothing(folder: Path) -> None:
    source = write(folder, "json.py", "def parse() -> int: return 1\n")
    assert list(load_tools([source])) == ["parse"]
    import json

    assert hasattr(json, "dumps")  # the real json is untouched


def test_the_tools_of_several_sources_are_served_together(folder: Path) -> None:
    first = write(folder, "first.py", "def a() -> int: return 1\n")
    second = write(folder, "second.py", "def b() -> int: return 1\n")
    assert list(load_tools([first, second])) == ["a", "b"]


@pytest.mark.parametrize(
    ("files", "sources", "message"),
    [
        (
            {},
            ["missing.py"],
            "tools file not found: missing.py (give the path of a .py file, or "
            "the name of an importable module)",
        ),
        ({"adir/x.py": ""}, ["adir"], "adir defines no tools"),  # a namespace package
        ({"adir/x.py": ""}, ["adir/"], "adir/ is a directory; give a .py file or a module name"),
        (
            {},
            ["no_such_module_here"],
            "no module named 'no_such_module_here': give a .py file "
            "path (e.g. --tools no_such_module_here.py)",
        ),
        (
            {"empty.py": "X = 1\n"},
            ["empty.py"],
            "empty.py defines no tools: define public functions in it, or list the tools",
        ),
        (
            {"bad.py": "TOOLS = 'a'\n"},
            ["bad.py"],
            "bad.py: TOOLS must be a list of functions or a dict of name to function, not str",
        ),
        (
            {"broken.py": "def f() -> int: return 1\n1 / 0\n"},
            ["broken.py"],
            "importing broken.py failed:\nTraceback (most recent call last):",
        ),
        (
            {"needs.py": "import not_installed_anywhere\n"},
            ["needs.py"],
            "ModuleNotFoundError: No module named 'not_installed_anywhere'",
        ),
        (
            {"badname.py": "def f() -> int: return 1\nTOOLS = {'not a name': f}\n"},
            ["badname.py"],
            "badname.py: 'not a name' is not a valid Python name for a tool",
        ),
        (
            {"one.py": "def same() -> int: return 1\n", "two.py": "def same() -> int: return 2\n"},
            ["one.py", "two.py"],
            "two tools are named 'same' (in one.py and two.py); rename one",
        ),
    ],
)
def test_a_bad_source_is_an_error_that_says_what_to_do(
    folder: Path, files: dict[str, str], sources: list[str], message: str
) -> None:
    for name, text in files.items():
        write(folder, name, text)
    with pytest.raises(ToolDefinitionError) as refused:
        load_tools(sources)
    assert message in str(refused.value)


def test_a_failed_import_shows_the_files_lines_not_the_loaders(folder: Path) -> None:
    write(folder, "fails.py", "def f() -> int: return 1\nraise RuntimeError('no config')\n")
    with pytest.raises(ToolDefinitionError) as refused:
        load_tools(["fails.py"])
    message = str(refused.value)
    assert 'fails.py", line 2' in message and "RuntimeError: no config" in message
    assert "loading.py" not in message
    write(folder, "fixed.py", "def f() -> int: return 1\n")
    assert list(load_tools(["fixed.py"])) == ["f"]  # nothing half-imported is left behind


# -- tools named elsewhere --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "python"),
    [
        ("get_weather", "get_weather"),
        ("get-weather", "get_weather"),
        ("files.read", "files_read"),
        ("2fa", "tool_2fa"),
        ("import", "import_"),
        ("None", "None_"),
        ("café-menu", "café_menu"),
        ("x²", "x_"),
        ("---", "___"),
        ("", "tool"),
    ],
)
def test_python_name_spells_a_foreign_name_in_python(name: str, python: str) -> None:
    assert python_name(name) == python
    assert is_python_name(python_name(name))


def echo(name: str, source: str = "the MCP server 'demo'") -> ForeignTool:
    def call(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"called": name, **arguments}

    return ForeignTool(
        name,
        {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        call,
        source,
        description="Echo.",
    )


async def test_a_renamed_tool_keeps_calling_its_source_by_the_original_name() -> None:
    (tool,) = foreign_tools([echo("web-search")])
    assert tool.name == "web_search"
    assert tool.description == (
        "Called 'web-search' by the MCP server 'demo'; 'web_search' here.\n\nEcho."
    )
    outcome = await tool.call({"q": "hotels"})
    assert outcome.value_json == b'{"called":"web-search","q":"hotels"}'


def test_names_taken_by_others_are_named_with_who_took_them() -> None:
    (tool,) = foreign_tools([echo("web-search")], taken={"web_search": "the host tools"})
    assert tool.name == "web_search_2"
    assert "('web_search' is taken by the host tools)" in (tool.description or "")


def test_a_python_name_keeps_its_description_untouched() -> None:
    (tool,) = foreign_tools([echo("search")])
    assert (tool.name, tool.description) == ("search", "Echo.")
