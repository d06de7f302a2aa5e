"""fusegraph: a compiler from a small layer-graph DSL to fused Triton kernels, checked against PyTorch.

The public names are imported when first used (PEP 562), so `import fusegraph` (and the `fusegraph`
command's --help) does not wait for torch."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_ERRORS = ("CacheError", "CheckpointError", "DistributedError", "FusegraphError", "GraphError", "InputError")
_LAYERS = ("GRU", "LSTM", "Activation", "AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "AdaptiveMaxPool1D",
           "AdaptiveMaxPool2D", "Add", "AvgPool1D", "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "ChannelScale",
           "ChannelShuffle", "Concatenate", "Conv1D", "Conv2D", "Dense", "Dropout", "Embedding", "Flatten",
           "GlobalAvgPool1D", "GlobalAvgPool2D", "Input", "Layer", "LayerNorm", "LayerScale", "MaxPool1D",
           "MaxPool2D", "Model", "Multiply", "Permute", "Reshape", "Sequential", "SimpleRNN", "Split",
           "StochasticDepth")
# each public name -> the module that defines it
_HOMES: dict[str, str] = {
    **dict.fromkeys(_ERRORS, ".ir"),
    **dict.fromkeys(_LAYERS, ".nn"),
    "LossScale": ".precision",
    "CompiledModel": ".runtime",
    "compile": ".runtime",
    "from_torch": ".interop",
    "load": ".saving",
}
_SUBMODULES = {"callbacks": ".callbacks", "ir": ".ir", "optim": ".optim", "zoo": ".nn.zoo"}

__all__ = sorted([*_HOMES, *_SUBMODULES])


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name], __name__)
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    else:
        raise AttributeError(f"module 'fusegraph' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
