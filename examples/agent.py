# An agent-style script: the code an LLM writes to answer a request with tools.
#
# "Plan a trip to London, Paris and Tokyo: check the weather, find travel gear
#  with prices in euros, and book two nights wherever a hotel is free."
#
# It runs in a Jupyter kernel whose `tools` module calls the host's functions:
#
#     progtc-kernel run examples/agent.py --tools examples/tools.py
#
# Kernel cells may `await` at the top level, which plain Python files may not:
# ruff: noqa: F704
import asyncio

from IPython.display import Markdown, display
from tools import ToolError, book_hotel, convert_currency, get_weather, search_database

trip = [("London", "UK"), ("Paris", "France"), ("Tokyo", "Japan")]

# In a script that awaits, every tool call gives an awaitable, and plain `def`
# functions block instead. Independent calls run concurrently: await them together.
forecasts = await asyncio.gather(*[get_weather(city, country) for city, country in trip])
weather = {city: forecast for (city, _), forecast in zip(trip, forecasts, strict=True)}
for city, forecast in weather.items():
    print(f"{city:<7} {forecast}")


def price_in_euros(product):
    # A plain `def`: tool calls here block and return the value, no `await`.
    return convert_currency(product["price_usd"], "USD", "EUR")


gear = await search_database("electronics", limit=3)
print(f"\nTravel gear ({len(gear)} found):")
for product in gear:
    print(f"  {product['name']:<28} €{price_in_euros(product):>7.2f}")

# A tool may fail: its error arrives here as ToolError, so the plan can adapt.
bookings = {}
for city, _ in trip:
    try:
        bookings[city] = await book_hotel(city, nights=2)
    except ToolError as exc:
        print(f"\nNo hotel in {city}: {exc.message}")

rows = "\n".join(
    f"| {city} | {weather[city]} | "
    f"{bookings[city]['confirmation'] if city in bookings else 'no rooms left'} |"
    for city, _ in trip
)
display(Markdown(f"\n## Trip plan\n\n| City | Weather | Hotel |\n|---|---|---|\n{rows}"))
