"""Example host tools for ``progtc-kernel run``: deterministic, no network.

    progtc-kernel run examples/agent.py --tools examples/tools.py

Every public function defined here becomes a tool (list them in ``TOOLS`` to
choose). Code in the kernel imports them with ``from tools import get_weather``.
"""

from __future__ import annotations

import asyncio
from typing import Any

_WEATHER = {
    ("london", "uk"): ("Light rain", 14),
    ("paris", "france"): ("Sunny", 22),
    ("tokyo", "japan"): ("Cloudy", 18),
    ("new york", "usa"): ("Clear", 25),
}

_PRODUCTS = [
    {"id": 1, "name": "Travel adapter", "category": "electronics", "price_usd": 19.99},
    {
        "id": 2,
        "name": "Noise-cancelling headphones",
        "category": "electronics",
        "price_usd": 249.00,
    },
    {"id": 3, "name": "Carry-on suitcase", "category": "luggage", "price_usd": 189.50},
    {"id": 4, "name": "Packing cubes", "category": "luggage", "price_usd": 24.95},
    {"id": 5, "name": "Travel pillow", "category": "comfort", "price_usd": 29.00},
    {"id": 6, "name": "Portable charger", "category": "electronics", "price_usd": 39.99},
]

# Units of each currency per US dollar.
_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0}

_HOTEL_ROOMS = {"london": 3, "paris": 0, "tokyo": 5, "new york": 1}


async def get_weather(city: str, country: str) -> str:
    """Current weather for a city, e.g. ``"Light rain, 14°C"``."""
    await asyncio.sleep(0.05)  # pretend to ask a weather service
    conditions, celsius = _WEATHER.get((city.lower(), country.lower()), ("Unknown", 20))
    return f"{conditions}, {celsius}°C"


def search_database(query: str, limit: int = 10) -> list[dict[str, Any]]:
    """Products whose name or category contains ``query`` (case-insensitive).

    Each product is a dict with ``id``, ``name``, ``category`` and ``price_usd``.
    """
    query = query.lower()
    found = [p for p in _PRODUCTS if query in p["name"].lower() or query in p["category"]]
    return found[:limit]


def convert_currency(amount: float, from_currency: str, to_currency: str) -> float:
    """Convert an amount between USD, EUR, GBP and JPY, rounded to 2 decimals."""
    try:
        rate = _RATES[to_currency.upper()] / _RATES[from_currency.upper()]
    except KeyError as exc:
        raise ValueError(f"unknown currency {exc.args[0]!r}; known: {', '.join(_RATES)}") from None
    return round(amount * rate, 2)


async def book_hotel(city: str, nights: int = 1) -> dict[str, Any]:
    """Book a hotel room; raises ``ValueError`` when the city has no rooms left."""
    rooms = _HOTEL_ROOMS.get(city.lower(), 0)
    if rooms == 0:
        raise ValueError(f"no rooms available in {city}")
    return {"city": city, "nights": nights, "confirmation": f"HTL-{city[:3].upper()}-{nights:03d}"}
