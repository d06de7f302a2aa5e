"""Running compiled graphs: device selection, memory planning, programs of kernel launches, CUDA graph
replay, CompiledModel and the Trainer; `compile` (entry.py) makes either from a model."""

from .compiled import CompiledModel
from .device import select_device
from .entry import compile

__all__ = ["CompiledModel", "compile", "select_device"]
