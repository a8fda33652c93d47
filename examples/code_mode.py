"""ProgrammaticToolset without an LLM: what a model would see and send, step by step.

    python examples/code_mode.py

1. The model asks for the execution environment (instructions and typed stubs).
2. It sends one script that calls several tools and returns only what it needs.
3. Its context receives that small dict, not every tool result.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from progtc_kernel import ProgrammaticToolset, load_tools

TOOLS = load_tools([str(Path(__file__).resolve().parent / "tools.py")])

SCRIPT = """\
import asyncio
from tools import get_weather, search_database

async def run():
    cities = [("London", "UK"), ("Paris", "France"), ("Tokyo", "Japan")]
    weather = await asyncio.gather(*(get_weather(city, country) for city, country in cities))
    gear = await search_database("electronics")
    cheapest = min(gear, key=lambda p: p["price_usd"])
    rainy = [city for (city, _), w in zip(cities, weather) if "rain" in w.lower()]
    return {"rainy": rainy, "cheapest_gadget": cheapest["name"], "usd": cheapest["price_usd"]}
"""


async def main() -> None:
    async with ProgrammaticToolset(TOOLS) as toolset:
        environment = await toolset.get_execution_environment()
        print(
            f"1. environment: {len(environment['instructions']):,} characters of "
            "instructions, e.g.\n"
        )
        stubs = environment["instructions"].split("```python\n", 1)[1].split("\n\n")[0]
        print("   " + stubs.replace("\n", "\n   ") + "\n")
        result = await toolset.run_script(SCRIPT)
        print(
            f"2. one script made {len(result.tool_calls)} tool calls: "
            f"{', '.join(call.name for call in result.tool_calls)}"
        )
        print(f"3. the model's context gets {len(result.json_text)} bytes back: {result.json_text}")


if __name__ == "__main__":
    asyncio.run(main())
