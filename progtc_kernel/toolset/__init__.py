"""ProgrammaticToolset: an agent calls the host's tools through one Python script."""

from .environment import DEFAULT_MODULES
from .outputs import ScriptOutput
from .toolset import ProgrammaticToolset, ScriptResult

__all__ = ["DEFAULT_MODULES", "ProgrammaticToolset", "ScriptOutput", "ScriptResult"]
