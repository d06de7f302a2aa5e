"""fusegraph: a compiler from a small layer-graph DSL to fused Triton kernels, checked against PyTorch."""

from . import ir, optim
from .interop import from_torch
from .ir import CacheError, CheckpointError, FusegraphError, GraphError, InputError
from .nn import (
    GRU,
    LSTM,
    Activation,
    Add,
    AvgPool1D,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concatenate,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    Input,
    Layer,
    MaxPool1D,
    MaxPool2D,
    Model,
    Permute,
    Sequential,
    SimpleRNN,
    zoo,
)
from .precision import LossScale
from .runtime import CompiledModel, compile
from .saving import load

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "Activation", "Add", "AvgPool1D", "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "CacheError", "CheckpointError",
    "CompiledModel", "Concatenate", "Conv1D",
    "Conv2D", "Dense", "Dropout", "Embedding", "Flatten", "FusegraphError", "GlobalAvgPool1D", "GlobalAvgPool2D", "GraphError",
    "Input", "InputError", "Layer", "LossScale", "MaxPool1D", "MaxPool2D", "Model", "Permute", "Sequential", "SimpleRNN",
    "compile", "from_torch", "ir", "load",
    "optim", "zoo",
]
