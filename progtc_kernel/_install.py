"""The pip command that installs this package the way this host has it.

progtc-kernel is on no public index, so ``pip install progtc-kernel`` is never the
fix: a hint names the checkout or wheel this host installed it from (pip records it
in ``direct_url.json``), or, for a checkout on ``sys.path``, that checkout.
"""

from __future__ import annotations

import json
import shlex
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

DISTRIBUTION = "progtc-kernel"
_CHECKOUT = Path(__file__).resolve().parent.parent


def install_hint(extra: str | None = None, *, python: str | None = None) -> str:
    """``python -m pip install …`` for this package (with ``extra``) as this host has
    it. ``python``: the interpreter to install into (default: this one)."""
    target, editable = _source()
    pip = f"{python or shlex.quote(sys.executable)} -m pip install"
    if target is None:
        return (
            f"{pip} '{DISTRIBUTION}{_extras(extra)}' from the index, checkout or wheel "
            "you installed it from here (it is on no public index)"
        )
    spec = shlex.quote(target + _extras(extra))
    return f"{pip} -e {spec}" if editable else f"{pip} {spec}"


def _extras(extra: str | None) -> str:
    return f"[{extra}]" if extra else ""


def _source() -> tuple[str | None, bool]:
    """Where this package came from (a local path) and whether it is editable."""
    try:
        recorded = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        recorded = None
    if recorded:
        origin = json.loads(recorded)
        url = urlparse(origin.get("url", ""))
        if url.scheme == "file":
            return unquote(url.path), bool(origin.get("dir_info", {}).get("editable"))
        return None, False
    if (_CHECKOUT / "pyproject.toml").exists():  # a checkout on sys.path, not installed
        return str(_CHECKOUT), True
    return None, False


def missing_extra(extra: str, exc: ImportError, needs: str) -> ModuleNotFoundError:
    """The error for an optional dependency that is not installed, naming the pip
    command that fixes it. ``needs``: what wants it ("CodeModeToolset needs
    pydantic-ai")::

        try:
            from pydantic_ai import RunContext
        except ImportError as exc:
            raise missing_extra("pydantic-ai", exc, "CodeModeToolset needs pydantic-ai") from exc
    """
    return ModuleNotFoundError(
        f"{needs} ({exc}); install the {extra!r} extra: {install_hint(extra)}", name=exc.name
    )
