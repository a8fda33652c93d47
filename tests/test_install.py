"""Installing it as a user does: progtc-kernel is on no public index.

The README's way: build a wheel of the checkout with ``python -m build``, install it into
a clean environment, and run the demo from there (outside the checkout, so nothing of
the source tree is importable). The wheel's version, ``__version__`` and what a kernel
reports agree, and every install hint names the wheel the package came from.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from progtc_kernel import __version__
from progtc_kernel._install import install_hint

from .conftest import ENVS, ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("progtc_kernel-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Python of a fresh environment with the wheel installed (rebuilt per run)."""
    env = ENVS / "from-wheel"
    shutil.rmtree(env, ignore_errors=True)
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    python = env / "bin" / "python"
    if uv:
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(env)], check=True)
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(python), str(wheel)], check=True
        )
    else:
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True)
    return str(python)


def test_the_wheel_the_module_and_the_version_agree(wheel: Path, installed: str) -> None:
    assert re.fullmatch(rf"progtc_kernel-{re.escape(__version__)}-py3-none-any\.whl", wheel.name)
    seen = subprocess.run(
        [installed, "-c", "import progtc_kernel; print(progtc_kernel.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=wheel.parent,
    )
    assert seen.stdout.strip() == __version__


def test_the_demo_runs_from_the_installed_wheel(installed: str, tmp_path: Path) -> None:
    for name in ("agent.py", "tools.py"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    command = Path(installed).parent / "progtc-kernel"
    done = subprocess.run(
        [str(command), "run", "agent.py", "--tools", "tools.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert "Sunny" in done.stdout or "Sunny" in done.stderr


def test_install_hints_name_the_wheel_it_came_from(wheel: Path, installed: str) -> None:
    hint = subprocess.run(
        [
            installed,
            "-c",
            "from progtc_kernel._install import install_hint; "
            "import json; print(json.dumps([install_hint('mcp'), "
            "install_hint(python='/opt/py/bin/python')]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=wheel.parent,
    )
    for_extra, for_kernel = json.loads(hint.stdout)
    assert for_extra.endswith(f"-m pip install {shlex.quote(f'{wheel}[mcp]')}")
    assert for_kernel == f"/opt/py/bin/python -m pip install {shlex.quote(str(wheel))}"


@pytest.mark.fast
def test_from_the_checkout_hints_name_the_checkout() -> None:
    # The test environment installs this checkout in editable mode (the README's way).
    assert install_hint("server") == (
        f"{shlex.quote(sys.executable)} -m pip install -e {shlex.quote(f'{ROOT}[server]')}"
    )
    assert "pip install progtc-kernel" not in install_hint()
