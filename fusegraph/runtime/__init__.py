"""Device selection, memory planning, CompiledModel (and, later, the training loop)."""

from .compiled import CompiledModel, compile
from .device import select_device

__all__ = ["CompiledModel", "compile", "select_device"]
