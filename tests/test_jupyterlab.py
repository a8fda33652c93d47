"""A person in JupyterLab calls the tools of an attached host, in a real browser.

JupyterLab runs on loopback with the "Python 3 (progtc)" kernelspec; headless
Chromium (Debian's chromium and chromium-driver, driven by selenium) opens a
notebook, which starts its kernel; ``progtc-kernel attach`` serves that kernel by
id; the cell is run with Shift+Enter and its output read off the page; a blocking
call is stopped with the toolbar's interrupt button. A screenshot of the page is
kept in ``.test-artifacts/jupyterlab-attach.png``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel.kernelspec import kernel_argv

from .servers import JupyterProcess, jupyter_lab
from .test_attach import HOST_TOOLS, Attach

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE_TIMEOUT = 90  # generous: two busy cores start a browser, JupyterLab and a kernel

CELLS = [
    "from tools import get_weather\nprint(await get_weather('Oslo', 'NO'))",
    "import tools\ntools.wait()  # blocks until interrupted",
]


def notebook(cells: list[str]) -> dict[str, Any]:
    """A notebook whose kernel is "Python 3 (progtc)"."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{i}",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
            for i, source in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {
                "name": "progtc",
                "display_name": "Python 3 (progtc)",
                "language": "python",
            }
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through the system's chromedriver (no driver downloads)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        reason = (
            "needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def lab(tmp_path: Path, newest_kernel_python: str) -> AsyncIterator[JupyterProcess]:
    """JupyterLab with the "Python 3 (progtc)" kernelspec and a notebook, weather.ipynb."""
    spec = tmp_path / "share" / "kernels" / "progtc"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": kernel_argv(newest_kernel_python),
                "display_name": "Python 3 (progtc)",
                "language": "python",
            }
        )
    )
    # No news toast over the page (the tests are offline anyway).
    settings = tmp_path / "config/lab/user-settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    process = jupyter_lab(tmp_path)
    (tmp_path / "root" / "weather.ipynb").write_text(json.dumps(notebook(CELLS)))
    await process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_a_person_in_jupyterlab_calls_the_attached_hosts_tools(
    lab: JupyterProcess, browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def until(condition: Callable[[Any], Any]) -> Any:
        # (an output being rendered may replace the elements we just found)
        return WebDriverWait(
            browser, PAGE_TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)
        ).until(condition)

    def run_cell(index: int) -> None:
        """Click into the cell's editor and press Shift+Enter, as a person does."""
        cells = until(lambda page: page.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        cells[index].find_element(By.CSS_SELECTOR, ".cm-content").click()
        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(
            Keys.SHIFT
        ).perform()

    def output(index: int) -> str:
        cell = browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[index]
        return "".join(o.text for o in cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output"))

    # Opening the notebook starts its kernel; the server lists it in the sessions.
    browser.get(f"{lab.url}/lab/tree/weather.ipynb?token={lab.token}")
    until(lambda page: page.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content"))
    kernel_id = await notebook_kernel(lab, "weather.ipynb")

    tools_file = tmp_path / "host_tools.py"
    tools_file.write_text(HOST_TOOLS)
    async with Attach(
        "--server",
        lab.url,
        "--token",
        lab.token,
        "--kernel-id",
        kernel_id,
        "--tools",
        str(tools_file),
    ) as host:
        await host.line("serving ")

        run_cell(0)
        until(lambda page: "Sunny in Oslo, NO" in output(0))
        assert output(0) == "Sunny in Oslo, NO"
        await host.line("✓ get_weather ")

        # A blocking call, stopped from the toolbar: the cell ends, the tool is cancelled.
        run_cell(1)
        await host.line("→ wait()")
        browser.find_element(
            By.CSS_SELECTOR, "jp-button[data-command='notebook:interrupt-kernel']"
        ).click()
        until(lambda page: "interrupted" in output(1) or "KeyboardInterrupt" in output(1))
        assert "----> 2 tools.wait()" in output(1)  # the person's line, not the machinery's
        assert "futures/_base.py" not in output(1) and "threading.py" not in output(1)
        await host.line("✗ wait cancelled")
        save_screenshot(browser, tmp_path / "jupyterlab-attach.png")
        assert await host.detach() == 0


async def notebook_kernel(lab: JupyterProcess, path: str) -> str:
    """The id of the kernel JupyterLab started for the notebook at ``path``."""
    server = lab.server()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PAGE_TIMEOUT
    while True:
        sessions = await server.request("GET", "api/sessions")
        found = [s["kernel"]["id"] for s in sessions if s["path"] == path and s.get("kernel")]
        if found:
            return str(found[0])
        assert loop.time() < deadline, f"JupyterLab started no kernel for {path}: {sessions}"
        await asyncio.sleep(0.2)  # polling the REST API: the server offers no event


def save_screenshot(browser: Any, path: Path) -> None:
    """Into the test's folder, and a stable copy into .test-artifacts/ for people."""
    assert browser.save_screenshot(str(path)), "no screenshot"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
