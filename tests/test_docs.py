"""The documentation site: it builds with ``mkdocs build --strict``, and its examples run.

Every page under ``docs/`` (and ``README.md``) is a session, as a notebook is: its
``python`` blocks run in order in one namespace (a module of its own), top-level
``await`` allowed, so a later block uses what an earlier one defined; its ``bash``
blocks run in a shell, with this environment's ``bin`` first on ``PATH``. Both run in a
folder of the page's own, which holds a copy of the checkout's ``examples/``, as a
user's checkout does.

An HTML comment (invisible on the site) right before a block says how it runs:

* ``<!-- test: in the kernel, tools: get_weather, search_database -->``: code a model
  writes, run in a kernel whose ``tools`` are those functions of the page.
* ``<!-- test: skip: WHY -->``: not run; WHY says what outside thing it needs (an E2B API
  key, a cluster). A skip without a reason fails the test.

And one at the top of a page, before its first block:

* ``<!-- test: fast -->``: the page's examples need no kernel and no server.
* ``<!-- test: needs jupyter-server -->``: a Jupyter Server runs on loopback for the page;
  ``JUPYTER_URL`` is its URL with ``?token=``, as ``jupyter server`` prints it.
* ``<!-- test: needs progtc-server -->``: ``progtc-kernel serve`` runs on loopback;
  ``PROGTC_URL`` and ``PROGTC_API_KEY`` say where and with which key.

Blocks in other languages (``text``, ``json``, ``dockerfile``) are shown, not run.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .servers import TOKEN, JupyterProcess, free_port, jupyter_server

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent

FENCE = re.compile(
    r"(?:<!--[ \t]*test:[ \t]*(?P<directive>[^\n]*?)[ \t]*-->[ \t]*\n)?"  # how it runs, if said
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
PAGE_DIRECTIVE = re.compile(r"<!--\s*test:\s*(fast|needs [\w-]+)\s*-->")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    directive: str

    @property
    def skipped(self) -> bool:
        return self.directive.startswith("skip")

    @property
    def kernel_tools(self) -> list[str] | None:
        """The tools of a block that runs in the kernel, else None."""
        found = re.fullmatch(r"in the kernel(?:, tools: (?P<names>.*))?", self.directive)
        if found is None:
            return None
        return [name.strip() for name in (found["names"] or "").split(",") if name.strip()]


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    fast: bool = False

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def read_page(path: Path) -> Page:
    text = path.read_text("utf-8")
    page = Page(path)
    for directive in PAGE_DIRECTIVE.findall(text):
        if directive == "fast":
            page.fast = True
        else:
            page.needs.append(directive.removeprefix("needs "))
    for match in FENCE.finditer(text):
        if match["lang"] not in ("python", "bash"):
            continue
        indent = len(match["indent"])
        code = "\n".join(line[indent:] for line in match["body"].splitlines())
        page.blocks.append(
            Block(
                page.name,
                text.count("\n", 0, match.start("body")) + 1,
                match["lang"],
                code,
                match["directive"] or "",
            )
        )
    return page


# The site's pages, and the README, whose example is the first a newcomer runs.
PAGES = [read_page(path) for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]]
RUNNABLE = [page for page in PAGES if any(not block.skipped for block in page.blocks)]


def _param(page: Page) -> object:
    return pytest.param(page, id=page.name, marks=[pytest.mark.fast] if page.fast else [])


# -- the site ------------------------------------------------------------------------


# In the full layer although it needs no kernel: the build takes seconds (griffe reads the
# whole package), more than the fast layer's budget can spare.
def test_the_site_builds_with_no_broken_link_or_reference(tmp_path: Path) -> None:
    built = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "reference" / "kernels" / "index.html").exists()


@pytest.mark.fast
def test_every_skipped_example_says_why_and_every_directive_is_known() -> None:
    for page in PAGES:
        for block in page.blocks:
            where = f"{block.page}:{block.line}"
            if block.skipped:
                assert re.fullmatch(r"skip: \S.{9,}", block.directive), (
                    f"{where}: say why the example cannot run: <!-- test: skip: WHY -->"
                )
            else:
                assert block.directive == "" or block.kernel_tools is not None, (
                    f"{where}: unknown directive {block.directive!r}"
                )
        assert set(page.needs) <= {"jupyter-server", "progtc-server"}, page.name


@pytest.mark.fast
def test_the_api_reference_shows_everything_the_package_exports() -> None:
    import progtc_kernel

    reference = "\n".join(path.read_text("utf-8") for path in (DOCS / "reference").glob("*.md"))
    shown = set(re.findall(r"^::: progtc_kernel\.(\w+)", reference, re.MULTILINE))
    assert set(progtc_kernel.__all__) - {"__version__"} <= shown


@pytest.mark.fast
def test_the_docs_say_nothing_of_a_public_index() -> None:
    """The package is on no public index: no page may tell a user to install it from one."""
    for page in PAGES:
        assert "pip install progtc-kernel" not in page.path.read_text("utf-8"), page.name


# -- the examples --------------------------------------------------------------------


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", [_param(page) for page in RUNNABLE])
def test_the_examples_of_each_page_run(page: Page, tmp_path: Path) -> None:
    module = types.ModuleType("docs_example_" + re.sub(r"\W", "_", page.name))
    sys.modules[module.__name__] = module
    loop = asyncio.new_event_loop()
    try:
        with ExitStack() as stack:
            for need in page.needs:
                stack.enter_context(SERVICES[need](loop, tmp_path))
            folder = tmp_path / "page"
            shutil.copytree(ROOT / "examples", folder / "examples")
            stack.enter_context(_working_in(folder))
            for block in page.blocks:
                if not block.skipped:
                    run_block(block, module, loop)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        del sys.modules[module.__name__]


def run_block(block: Block, module: types.ModuleType, loop: asyncio.AbstractEventLoop) -> None:
    where = f"{block.page}:{block.line}"
    if block.lang == "bash":
        run_bash(block)
    elif (tool_names := block.kernel_tools) is not None:
        run_in_kernel(block, [module.__dict__[name] for name in tool_names])
    else:
        code = compile(block.code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        outcome = eval(code, module.__dict__)  # a block with top-level await is a coroutine
        if inspect.iscoroutine(outcome):
            loop.run_until_complete(outcome)


def run_in_kernel(block: Block, tools: list[object]) -> None:
    from progtc_kernel import SyncToolKernel

    with SyncToolKernel(tools=tools) as kernel:
        result = kernel.execute(block.code)
    assert result.ok, f"{block.page}:{block.line}: {result.error}"


def run_bash(block: Block) -> None:
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, f"{block.page}:{block.line}: {ran.stdout}{ran.stderr}"


@contextmanager
def _working_in(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def _serving(
    process: JupyterProcess, loop: asyncio.AbstractEventLoop, environment: dict[str, str]
) -> Iterator[None]:
    loop.run_until_complete(process.start())
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        process.stop()


def _with_jupyter_server(
    loop: asyncio.AbstractEventLoop, home: Path
) -> AbstractContextManager[None]:
    process = jupyter_server(home / "jupyter")
    return _serving(process, loop, {"JUPYTER_URL": f"{process.url}/?token={TOKEN}"})


def _with_progtc_server(
    loop: asyncio.AbstractEventLoop, home: Path
) -> AbstractContextManager[None]:
    port = free_port()
    (home / "serve").mkdir()
    argv = [sys.executable, "-m", "progtc_kernel.cli", "serve", "--port", str(port)]
    process = JupyterProcess([*argv, "--pool-size", "1"], port, home / "serve", token=TOKEN)
    process.env["PROGTC_API_KEY"] = TOKEN  # as the page's `serve` command takes its key
    environment = {"PROGTC_URL": process.url, "PROGTC_API_KEY": TOKEN}
    return _serving(process, loop, environment)


SERVICES = {"jupyter-server": _with_jupyter_server, "progtc-server": _with_progtc_server}
