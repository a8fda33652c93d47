"""Scripts that run correctly on a real kernel with ``corpus_tools.TOOLS`` (and the
``helpers`` module): the checker must find nothing in any of them. They cover the
README's patterns: plain ``def run()`` calling tools, ``async def run()`` with ``await``
and ``asyncio.gather``, helper modules, dict and typed results, ``ToolError``, classes,
dataclasses, comprehensions, f-strings and stdlib work."""

from __future__ import annotations

GOOD: dict[str, str] = {
    "blocking_call": """
from tools import get_weather

def run():
    return {"weather": get_weather("London", "UK")}
""",
    "awaited_call": """
from tools import get_weather

async def run():
    weather = await get_weather("Paris", "France")
    return {"weather": weather}
""",
    "gather_two_cities": """
import asyncio
from tools import get_weather

async def run():
    london, tokyo = await asyncio.gather(
        get_weather("London", "UK"), get_weather("Tokyo", "Japan")
    )
    return {"london": london, "tokyo": tokyo}
""",
    "gather_comprehension": """
import asyncio
from tools import get_weather

CITIES = [("London", "UK"), ("Paris", "France"), ("Tokyo", "Japan")]

async def run():
    results = await asyncio.gather(*[get_weather(city, country) for city, country in CITIES])
    return {city: weather for (city, _), weather in zip(CITIES, results)}
""",
    "gather_return_exceptions": """
import asyncio
from tools import book_hotel, ToolError

async def run():
    outcomes = await asyncio.gather(
        book_hotel("London", 2), book_hotel("Paris"), return_exceptions=True
    )
    booked = [o["confirmation"] for o in outcomes if isinstance(o, dict)]
    failed = [str(o) for o in outcomes if isinstance(o, ToolError)]
    return {"booked": booked, "failed": len(failed)}
""",
    "dict_result_keys": """
from tools import search_database

def run():
    products = search_database("electronics")
    return {"names": [p["name"] for p in products], "total": sum(p["price_usd"] for p in products)}
""",
    "dict_result_get": """
from tools import book_hotel

def run():
    booking = book_hotel("Tokyo", nights=3)
    return {"code": booking.get("confirmation"), "nights": booking["nights"]}
""",
    "typed_result_keys": """
from tools import get_forecast

def run():
    forecast = get_forecast("Oslo", days=2)
    highs = [day["high"] for day in forecast["days"]]
    return {"city": forecast["city"], "max": max(highs), "unit": forecast["unit"]}
""",
    "typed_result_optional_key": """
from tools import get_forecast

def run():
    london = get_forecast("London")
    oslo = get_forecast("Oslo")
    return {"london": london.get("alert"), "oslo": oslo.get("alert", "none"),
            "has": "alert" in london}
""",
    "typed_result_awaited": """
import asyncio
from tools import get_forecast, get_user

async def run():
    forecast, user = await asyncio.gather(get_forecast("Rome", 1), get_user(2))
    return {"user": user["name"], "tags": user["tags"], "summary": forecast["days"][0]["summary"]}
""",
    "pydantic_result_blocking": """
from tools import get_user

def run():
    users = [get_user(i) for i in (1, 2, 3)]
    return {"names": [u["name"] for u in users], "emails": [u.get("email") for u in users]}
""",
    "tool_error_caught": """
from tools import book_hotel, ToolError

def run():
    try:
        book_hotel("Paris")
    except ToolError as exc:
        return {"error": exc.message, "tool": exc.tool, "kind": exc.error_type}
    return {"error": None}
""",
    "tool_error_caught_async": """
from tools import get_user, ToolError

async def run():
    found = {}
    for user_id in (1, 7):
        try:
            user = await get_user(user_id)
            found[str(user_id)] = user["name"]
        except ToolError as exc:
            found[str(user_id)] = f"missing: {exc.error_type}"
    return found
""",
    "import_tools_module": """
import tools

def run():
    return {"eur": tools.convert_currency(100, "USD", "EUR")}
""",
    "import_tools_module_async": """
import asyncio
import tools

async def run():
    a, b = await asyncio.gather(tools.get_weather("London", "UK"), tools.get_user(1))
    return {"weather": a, "user": b["id"]}
""",
    "aliased_import": """
from tools import convert_currency as fx

def run():
    return {"gbp": fx(10, "USD", "GBP"), "jpy": fx(10, from_currency="USD", to_currency="JPY")}
""",
    "helper_module": """
from helpers import in_euros, celsius_to_f

def run():
    return {"eur": in_euros(50), "f": celsius_to_f(21)}
""",
    "helper_module_async": """
import helpers
from tools import get_forecast

async def run():
    forecast = await get_forecast("Paris", 1)
    return {"f": helpers.celsius_to_f(forecast["days"][0]["high"])}
""",
    "blocking_helper_in_async": """
import asyncio
from tools import convert_currency

def to_eur(amount):
    return convert_currency(amount, "USD", "EUR")

async def run():
    eur = await asyncio.to_thread(to_eur, 30)
    return {"eur": eur, "direct": to_eur(10)}
""",
    "to_thread_tool": """
import asyncio
from tools import search_database

async def run():
    found = await asyncio.to_thread(search_database, "luggage", 5)
    return {"count": len(found)}
""",
    "create_task": """
import asyncio
from tools import get_weather

async def run():
    task = asyncio.create_task(get_weather("Tokyo", "Japan"))
    other = await get_weather("London", "UK")
    return {"tokyo": await task, "london": other}
""",
    "call_then_await": """
from tools import get_weather

async def run():
    pending = get_weather("Paris", "France")
    return {"paris": await pending}
""",
    "fstrings": """
from tools import convert_currency

def run():
    amount = 123.456
    eur = convert_currency(amount, "USD", "EUR")
    return {"text": f"{amount:.2f} USD is {eur:,.2f} EUR ({eur / amount:.1%})"}
""",
    "comprehensions": """
from tools import search_database

def run():
    products = search_database("")
    by_category = {}
    for product in products:
        by_category.setdefault(product["category"], []).append(product["name"])
    cheap = {p["name"] for p in products if p["price_usd"] < 30}
    return {"by_category": by_category, "cheap": sorted(cheap)}
""",
    "counter_groupby": """
import itertools
from collections import Counter
from tools import search_database

def run():
    products = sorted(search_database("", limit=50), key=lambda p: p["category"])
    counts = Counter(p["category"] for p in products)
    groups = {k: len(list(g)) for k, g in itertools.groupby(products, key=lambda p: p["category"])}
    return {"counts": dict(counts), "groups": groups}
""",
    "statistics_work": """
import statistics
from tools import get_forecast

def run():
    days = get_forecast("Madrid", days=5)["days"]
    highs = [d["high"] for d in days]
    return {"mean": statistics.mean(highs), "median": statistics.median(highs),
            "spread": max(highs) - min(highs)}
""",
    "dataclass_records": """
from dataclasses import dataclass, asdict
from tools import search_database

@dataclass
class Item:
    name: str
    price: float

    def discounted(self, rate: float) -> float:
        return round(self.price * (1 - rate), 2)

def run():
    items = [Item(p["name"], p["price_usd"]) for p in search_database("electronics")]
    return {"items": [asdict(i) for i in items], "sale": [i.discounted(0.1) for i in items]}
""",
    "class_with_tool_calls": """
from tools import convert_currency

class Wallet:
    def __init__(self, currency):
        self.currency = currency
        self.total = 0.0

    def add(self, amount, currency):
        self.total += convert_currency(amount, currency, self.currency)
        return self

def run():
    wallet = Wallet("EUR").add(10, "USD").add(5, "GBP")
    return {"total": round(wallet.total, 2)}
""",
    "async_class_method": """
import asyncio
from tools import get_weather

class Reporter:
    def __init__(self, cities):
        self.cities = cities

    async def report(self):
        found = await asyncio.gather(*(get_weather(c, k) for c, k in self.cities))
        return dict(zip([c for c, _ in self.cities], found))

async def run():
    return await Reporter([("London", "UK"), ("Paris", "France")]).report()
""",
    "nested_async_helper": """
import asyncio
from tools import get_forecast

async def warmest(cities):
    forecasts = await asyncio.gather(*[get_forecast(c, 1) for c in cities])
    best = max(forecasts, key=lambda f: f["days"][0]["high"])
    return best["city"]

async def run():
    return {"warmest": await warmest(["Oslo", "Rome", "Cairo"])}
""",
    "semaphore": """
import asyncio
from tools import get_user

async def run():
    limit = asyncio.Semaphore(2)

    async def one(i):
        async with limit:
            return await get_user(i)

    users = await asyncio.gather(*(one(i) for i in range(1, 4)))
    return {"names": [u["name"] for u in users]}
""",
    "as_completed": """
import asyncio
from tools import get_weather

async def run():
    order = []
    for done in asyncio.as_completed([get_weather("London", "UK"), get_weather("Paris", "France")]):
        order.append(await done)
    return {"results": sorted(order)}
""",
    "wait_for": """
import asyncio
from tools import get_weather

async def run():
    weather = await asyncio.wait_for(get_weather("Tokyo", "Japan"), timeout=30)
    return {"weather": weather}
""",
    "json_roundtrip": """
import json
from tools import get_forecast

def run():
    forecast = get_forecast("Lima", 2)
    text = json.dumps(forecast, sort_keys=True)
    return {"size": len(text), "back": json.loads(text)["city"]}
""",
    "regex": """
import re
from tools import get_weather

def run():
    text = get_weather("London", "UK")
    match = re.search(r"(-?\\d+)°C", text)
    return {"celsius": int(match.group(1)) if match else None}
""",
    "datetime_work": """
from datetime import date, timedelta
from tools import get_forecast

def run():
    days = get_forecast("Oslo", 3)["days"]
    first = date.fromisoformat(days[0]["date"])
    return {"last": (first + timedelta(days=len(days) - 1)).isoformat()}
""",
    "decimal_fraction": """
from decimal import Decimal, ROUND_HALF_UP
from fractions import Fraction
from tools import convert_currency

def run():
    eur = Decimal(str(convert_currency(10, "USD", "EUR")))
    return {"eur": str(eur.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)),
            "third": str(Fraction(1, 3) + Fraction(1, 6))}
""",
    "typing_annotations": """
from typing import Any, Optional
from tools import search_database

def cheapest(products: list[dict[str, Any]]) -> Optional[str]:
    if not products:
        return None
    return min(products, key=lambda p: p["price_usd"])["name"]

def run() -> dict[str, Any]:
    return {"cheapest": cheapest(search_database("luggage")), "none": cheapest([])}
""",
    "enum_use": """
from enum import Enum
from tools import convert_currency

class Currency(Enum):
    EUR = "EUR"
    GBP = "GBP"

def run():
    return {c.name: convert_currency(1, "USD", c.value) for c in Currency}
""",
    "functools_reduce": """
from functools import reduce, partial
from tools import convert_currency

def run():
    to_gbp = partial(convert_currency, from_currency="USD", to_currency="GBP")
    total = reduce(lambda acc, x: acc + to_gbp(x), [1, 2, 3], 0.0)
    return {"total": round(total, 2)}
""",
    "heapq_operator": """
import heapq
from operator import itemgetter
from tools import search_database

def run():
    products = search_database("", limit=20)
    top = heapq.nlargest(2, products, key=itemgetter("price_usd"))
    return {"top": [p["name"] for p in top]}
""",
    "while_loop_pages": """
from tools import search_database

def run():
    limit, seen = 1, []
    while limit <= 3:
        seen.append(len(search_database("e", limit=limit)))
        limit += 1
    return {"seen": seen}
""",
    "generator_function": """
from tools import get_user

def users(ids):
    for i in ids:
        yield get_user(i)

def run():
    return {"ids": [u["id"] for u in users([1, 2])]}
""",
    "nested_def_in_async": """
from tools import convert_currency, get_weather

async def run():
    def fx(x):
        return convert_currency(x, "USD", "EUR")
    weather = await get_weather("Paris", "France")
    return {"eur": fx(5), "weather": weather}
""",
    "lambda_in_async": """
import asyncio
from tools import get_weather

async def run():
    ask = lambda city, country: get_weather(city, country)
    a, b = await asyncio.gather(ask("London", "UK"), ask("Tokyo", "Japan"))
    return {"a": a, "b": b}
""",
    "kwargs_call": """
from tools import book_hotel

def run():
    options = {"city": "Tokyo", "nights": 2}
    booking = book_hotel(**options)
    return {"code": booking["confirmation"]}
""",
    "star_args_call": """
from tools import convert_currency

def run():
    legs = [(100, "USD", "EUR"), (50, "GBP", "JPY")]
    return {"legs": [convert_currency(*leg) for leg in legs]}
""",
    "optional_retry": """
from tools import get_user, ToolArgumentError, ToolError

def run():
    for candidate in (9, 8, 3):
        try:
            return {"user": get_user(candidate)["name"]}
        except ToolArgumentError:
            raise
        except ToolError:
            continue
    return {"user": None}
""",
    "module_level_setup": """
from tools import convert_currency

RATE = convert_currency(1, "USD", "EUR")

def run():
    return {"rate": RATE, "hundred": round(100 * RATE, 2)}
""",
    "print_and_return": """
from tools import search_database

def run():
    found = search_database("travel")
    for product in found:
        print(product["id"], product["name"])
    return {"count": len(found)}
""",
    "textwrap_string": """
import string
import textwrap
from tools import get_weather

def run():
    text = get_weather("New York", "USA")
    return {"short": textwrap.shorten(text * 5, 40), "upper": string.capwords(text)}
""",
    "random_seeded": """
import random
from tools import search_database

def run():
    rng = random.Random(7)
    products = search_database("")
    pick = rng.choice(products)
    return {"pick": pick["name"] in [p["name"] for p in products]}
""",
    "walrus_and_ternary": """
from tools import get_forecast

def run():
    if (alert := get_forecast("London").get("alert")) is not None:
        return {"alert": alert}
    return {"alert": "none"}
""",
    "typed_nested_loop": """
from tools import get_forecast

def run():
    lines = []
    for day in get_forecast("Lisbon", 3)["days"]:
        lines.append(f"{day['date']}: {day['low']:.0f}-{day['high']:.0f} {day['summary']}")
    return {"lines": lines}
""",
    "match_statement": """
from tools import get_user

def run():
    user = get_user(2)
    match user["tags"]:
        case []:
            kind = "none"
        case [first]:
            kind = f"one: {first}"
        case _:
            kind = "many"
    return {"kind": kind}
""",
    "deepcopy_update": """
import copy
from tools import get_forecast

def run():
    forecast = get_forecast("Paris", 1)
    changed = copy.deepcopy(forecast)
    changed["city"] = "Lyon"
    return {"before": forecast["city"], "after": changed["city"]}
""",
    "async_for_generator": """
from tools import get_user

async def users(ids):
    for i in ids:
        yield await get_user(i)

async def run():
    names = [u["name"] async for u in users([1, 3])]
    return {"names": names}
""",
    "list_of_records": """
import asyncio
from tools import find_hotels

async def run():
    paris, rome = await asyncio.gather(find_hotels("Paris"), find_hotels("Rome", limit=1))
    best = max(paris + rome, key=lambda hotel: hotel["stars"])
    return {"best": best["name"], "count": len(paris) + len(rome)}
""",
}
