"""The tools the type-check corpus's scripts call: the README's example tools
(``examples/tools.py``) and two whose results are typed records (a ``TypedDict`` and a
pydantic model), so that the stubs hold ``TypedDict`` results."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import pydantic
from typing_extensions import NotRequired, TypedDict

_spec = importlib.util.spec_from_file_location(
    "progtc_example_tools", Path(__file__).resolve().parents[2] / "examples" / "tools.py"
)
assert _spec is not None and _spec.loader is not None
examples: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(examples)


class Day(TypedDict):
    date: str
    high: float
    low: float
    summary: str


class Forecast(TypedDict):
    city: str
    unit: Literal["C", "F"]
    days: list[Day]
    alert: NotRequired[str]


class User(pydantic.BaseModel):
    id: int
    name: str
    email: str | None = None
    tags: list[str] = []


def get_forecast(city: str, days: int = 3) -> Forecast:
    """The forecast for a city, one entry a day; ``alert`` only when there is one."""
    forecast: Forecast = {
        "city": city,
        "unit": "C",
        "days": [
            {"date": f"2026-12-0{d + 1}", "high": 10.0 + d, "low": 2.0 + d, "summary": "Clear"}
            for d in range(days)
        ],
    }
    if city.lower() == "london":
        forecast["alert"] = "Fog"
    return forecast


async def get_user(user_id: int) -> User:
    """A user by id (ids 1 to 3 exist; others raise ``LookupError``)."""
    if not 1 <= user_id <= 3:
        raise LookupError(f"no user {user_id}")
    return User(id=user_id, name=f"user{user_id}", tags=["a", "b"][: user_id - 1])


class Hotel(pydantic.BaseModel):
    name: str
    stars: int


def find_hotels(city: str, limit: int = 3) -> list[Hotel]:
    """Hotels in a city, best first."""
    return [Hotel(name=f"{city} Hotel {i}", stars=5 - i) for i in range(limit)]


TOOLS = [
    examples.get_weather,
    examples.search_database,
    examples.convert_currency,
    examples.book_hotel,
    get_forecast,
    get_user,
    find_hotels,
]

# A helper module scripts import (installed with ``install_modules``, and supported).
HELPERS = {
    "helpers": (
        "from tools import convert_currency\n\n"
        "def in_euros(amount):\n"
        "    return convert_currency(amount, 'USD', 'EUR')\n\n"
        "def celsius_to_f(c):\n"
        "    return c * 9 / 5 + 32\n"
    )
}
