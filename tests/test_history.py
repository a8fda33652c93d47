"""IPython history stays in memory on the kernels this package starts: nothing written
to ``history.sqlite``, where another kernel of the same profile could read the code
(``get_ipython().history_manager.search(...)``). On disk only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from progtc_kernel import ToolKernel, execute_notebook
from progtc_kernel.kernels.local import LocalKernel

from .conftest import TOOLS
from .servers import kernelspec

HIST_FILE = "print(get_ipython().history_manager.hist_file)"
SECRET = "secret = 'the first client ran this'"


@pytest.fixture
def ipython_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An IPython profile folder of the test's own, for the kernels it starts."""
    folder = tmp_path / "ipython"
    monkeypatch.setenv("IPYTHONDIR", str(folder))
    return folder


def history_files(folder: Path) -> list[Path]:
    return list(folder.rglob("*.sqlite"))


async def test_a_tool_kernel_keeps_its_history_in_memory(
    kernel_python: str, ipython_dir: Path
) -> None:
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python)) as kernel:
        await kernel.execute(SECRET)
        where = await kernel.execute(HIST_FILE)
        await kernel.restart()
        after_restart = await kernel.execute(HIST_FILE)

    assert where.stdout == after_restart.stdout == ":memory:\n"
    assert history_files(ipython_dir) == []


async def test_a_tool_kernel_writes_history_where_asked(
    newest_kernel_python: str, ipython_dir: Path, tmp_path: Path
) -> None:
    on_disk = tmp_path / "history.sqlite"
    kernel = LocalKernel(python=newest_kernel_python, ipython_hist_file=str(on_disk))
    async with ToolKernel(TOOLS, kernel=kernel) as tool_kernel:
        await tool_kernel.execute(SECRET)
        where = await tool_kernel.execute(HIST_FILE)
    async with ToolKernel(
        TOOLS, kernel=LocalKernel(python=newest_kernel_python, ipython_hist_file=None)
    ) as tool_kernel:
        profile = await tool_kernel.execute(HIST_FILE)

    assert where.stdout == f"{on_disk}\n" and on_disk.exists()
    assert profile.stdout == f"{ipython_dir / 'profile_default' / 'history.sqlite'}\n"


@pytest.mark.parametrize("kernel", ["python=", "a kernelspec"])
def test_a_notebook_run_with_tools_keeps_its_history_in_memory(
    kernel: str,
    kernel_python: str,
    ipython_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # jupyter_client takes a kernel for IPython's by its name (python3): nbclient keeps
    # history in memory for those only. These kernels are IPython's whatever their name.
    kernelspec(tmp_path / "share", "my-venv", kernel_python)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share"))
    nb = new_notebook(cells=[new_code_cell(SECRET), new_code_cell(HIST_FILE)])
    if kernel == "python=":
        execute_notebook(nb, tools=TOOLS, python=kernel_python)
    else:
        execute_notebook(nb, tools=TOOLS, kernel_name="my-venv")

    assert nb.cells[1].outputs[0].text == ":memory:\n"
    assert history_files(ipython_dir) == []
