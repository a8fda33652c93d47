"""Scripts with a real error, each on the line marked ``# error``: every one would fail
on a real kernel (a ``KeyError``, ``TypeError``, ``AttributeError``, ``NameError``,
``ImportError`` or a ``ToolArgumentError``), and the checker should say so before it
runs."""

from __future__ import annotations

BAD: dict[str, str] = {
    "typed_result_wrong_key": """
from tools import get_forecast

def run():
    forecast = get_forecast("Oslo")
    return {"temp": forecast["temp"]}  # error
""",
    "typed_nested_wrong_key": """
from tools import get_forecast

def run():
    days = get_forecast("Oslo")["days"]
    return {"highs": [d["high_c"] for d in days]}  # error
""",
    "typed_wrong_key_awaited": """
import asyncio
from tools import get_forecast, get_user

async def run():
    forecast, user = await asyncio.gather(get_forecast("Rome"), get_user(1))
    return {"name": user["username"], "city": forecast["city"]}  # error
""",
    "model_result_attribute": """
from tools import get_user

def run():
    user = get_user(1)
    return {"name": user.name}  # error
""",
    "list_result_indexed_by_key": """
from tools import get_forecast

def run():
    forecast = get_forecast("Oslo")
    return {"high": forecast["days"]["high"]}  # error
""",
    "missing_argument": """
from tools import get_weather

def run():
    return {"weather": get_weather("London")}  # error
""",
    "missing_argument_async": """
import asyncio
from tools import get_weather

async def run():
    a, b = await asyncio.gather(get_weather("London", "UK"), get_weather("Paris"))  # error
    return {"a": a, "b": b}
""",
    "too_many_arguments": """
from tools import convert_currency

def run():
    return {"eur": convert_currency(10, "USD", "EUR", 2)}  # error
""",
    "unknown_keyword": """
from tools import book_hotel

def run():
    return {"booking": book_hotel("Tokyo", night=2)}  # error
""",
    "wrong_argument_type": """
from tools import get_user

def run():
    return {"user": get_user("alice")}  # error
""",
    "wrong_argument_type_list": """
from tools import get_weather

def run():
    return {"weather": get_weather(["London", "Paris"], "UK")}  # error
""",
    "wrong_argument_type_async": """
from tools import search_database

async def run():
    found = await search_database("bags", limit=None)  # error
    return {"found": found}
""",
    "misspelt_tool_import": """
from tools import get_wether  # error

def run():
    return {"weather": get_wether("London", "UK")}
""",
    "misspelt_tool_attribute": """
import tools

def run():
    return {"weather": tools.get_wether("London", "UK")}  # error
""",
    "missing_await": """
from tools import get_forecast

async def run():
    forecast = get_forecast("Oslo")
    return {"city": forecast["city"]}  # error
""",
    "undefined_name": """
from tools import get_weather

def run():
    weather = get_weather("London", "UK")
    return {"weather": wether}  # error
""",
    "float_result_as_str": """
from tools import convert_currency

def run():
    return {"eur": convert_currency(10, "USD", "EUR").upper()}  # error
""",
    "str_plus_float": """
from tools import convert_currency

def run():
    return {"text": "Total: " + convert_currency(10, "USD", "EUR")}  # error
""",
    "str_result_indexed_by_key": """
from tools import get_weather

def run():
    weather = get_weather("London", "UK")
    return {"sky": weather["conditions"]}  # error
""",
    "unused_helper_wrong_call": """
from tools import get_forecast

def summary(city):
    return get_forecast(city, days="three")  # error

def run():
    return {"ok": True, "summary": summary("Oslo")}
""",
    "list_of_records_attribute": """
from tools import find_hotels

def run():
    return {"names": [hotel.name for hotel in find_hotels("Paris")]}  # error
""",
}
