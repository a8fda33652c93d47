"""A papermill engine whose kernels serve host tools: ``--engine progtc``.

    PROGTC_KERNEL_TOOLS=tools.py papermill IN.ipynb OUT.ipynb -p city Oslo --engine progtc

    papermill.execute_notebook("in.ipynb", "out.ipynb", engine_name="progtc",
                               tools=[get_weather], parameters={"city": "Oslo"})

The engine lives in ``.engine``, papermill's entry point. papermill loads its engines
while it is first imported; a module that imported papermill and defined the engine
would be found half-built whenever it was imported first. Here papermill is imported
before the engine's module starts (Python runs this package first), so papermill
always finds the engine whole, whichever of the two is imported first.

Needs ``pip install "progtc-kernel[papermill]"``.
"""

from ..._install import missing_extra

try:
    import papermill  # noqa: F401 - first: see above
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra("papermill", exc, "the papermill engine needs papermill") from exc

from .engine import TOOLS_VARIABLE, ProgtcEngine, tools_from_environment

__all__ = ["TOOLS_VARIABLE", "ProgtcEngine", "tools_from_environment"]
