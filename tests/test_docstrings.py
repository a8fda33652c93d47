"""The public API's docstrings are Google style, so that the API reference on the site
(mkdocstrings, ``docstring_style: google``) renders a table of every parameter.

Read statically with griffe, as mkdocstrings reads them: each public class's constructor
and each public function documents every parameter in its ``Args:`` section (or, for
dataclasses and models, ``Attributes:``), names no parameter it does not have, and has no
run-on ``name``: paragraph of the old style.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import griffe  # mkdocstrings' reader of docstrings (the docs dependency group)
import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
# Beside progtc_kernel.__all__: what the guides send users to, outside the top level.
ALSO_PUBLIC = [
    "integrations.pydantic_ai.CodeModeToolset",
    "integrations.pydantic_ai.script_calls",
    "integrations.pydantic_ai.script_results",
]
# Methods whose parameters a user passes every day.
METHODS = {
    "ToolKernel": ["execute", "stream", "install_modules"],
    "ToolBridge": ["start", "wait_ready", "use_tools"],
    "JupyterServer": ["e2b", "kernel", "new_kernel", "request"],
    "ProgrammaticToolset": ["execute_tool_script", "run_script"],
    "AsyncProgtcClient": ["execute_code", "ping", "wait_for_server", "close_session"],
    "Tool": ["from_function", "from_schema", "renamed"],
    "ToolRegistry": ["of"],
}
DOCUMENTING = {"parameters", "attributes", "other parameters"}


def package() -> Any:
    return griffe.load("progtc_kernel", search_paths=[str(ROOT)], docstring_parser="google")


def public_objects() -> Iterator[tuple[str, Any]]:
    root = package()
    names = [
        name
        for name in root.members["__all__"].value.elements
        if not name.strip("'\"").startswith("__")
    ]
    for quoted in [*names, *(repr(path) for path in ALSO_PUBLIC)]:
        name = quoted.strip("'\"")
        target = root[name]
        target = getattr(target, "final_target", target)
        if target.is_attribute or target.is_module:
            continue
        yield name, target
        for method in METHODS.get(name, []):
            yield f"{name}.{method}", target.members[method]


def old_style(parameter: str) -> re.Pattern[str]:
    """The old way to describe a parameter: "``name``: ..." (or "``a``, ``b``: ...")."""
    return re.compile(rf"``\*{{0,2}}{re.escape(parameter)}``(?:, ``\w+``)*: ")


def documented_names(obj: Any) -> set[str]:
    if obj.docstring is None:
        return set()
    names: set[str] = set()
    for section in obj.docstring.parse("google"):
        if section.kind.value in DOCUMENTING:
            names.update(item.name.lstrip("*") for item in section.value)
    return names


def parameters_of(obj: Any) -> tuple[list[str], Any]:
    """A callable's parameters and where they are documented (a class: its docstring,
    as the site merges ``__init__`` into the class). A model's fields count as its
    parameters, documented in ``Attributes:`` or by a docstring of their own."""
    function = obj.members.get("__init__") if obj.is_class else obj
    if obj.is_class and function is None:
        fields = [
            member
            for member in obj.members.values()
            if member.is_attribute and member.annotation is not None
            if "property" not in member.labels  # a property documents itself
            if not member.name.startswith("_") and member.name != "model_config"
        ]
        return [field.name for field in fields if field.docstring is None], obj
    if function is None or not function.is_function:
        return [], obj
    names = [
        parameter.name for parameter in function.parameters if parameter.name not in ("self", "cls")
    ]
    return names, obj


def test_the_public_api_documents_every_parameter_in_google_style() -> None:
    problems = []
    for name, obj in public_objects():
        parameters, home = parameters_of(obj)
        documented = documented_names(home)
        if obj.is_class and "__init__" in obj.members:
            documented |= documented_names(obj.members["__init__"])
        missing = [parameter for parameter in parameters if parameter not in documented]
        if missing:
            problems.append(f"{name}: no Args: entry for {', '.join(missing)}")
        text = home.docstring.value if home.docstring else ""
        if any(old_style(parameter).search(text) for parameter in parameters):
            problems.append(f"{name}: a run-on ``name``: paragraph; use an Args: section")
    assert not problems, "\n".join(problems)
