"""The DSL: Keras-named layers that build fusegraph IR, the functional Model and Sequential."""

from .conv import Conv1D, Conv2D
from .core import (
    Activation,
    ChannelShuffle,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    LayerScale,
    Permute,
    Reshape,
    Split,
    StochasticDepth,
)
from .layer import Layer
from .merge import Add, ChannelScale, Concatenate, Multiply
from .model import Input, Model, Sequential
from .norm import BatchNorm1D, BatchNorm2D, LayerNorm
from .pool import (
    AdaptiveAvgPool1D,
    AdaptiveAvgPool2D,
    AdaptiveMaxPool1D,
    AdaptiveMaxPool2D,
    AvgPool1D,
    AvgPool2D,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    MaxPool1D,
    MaxPool2D,
)
from .recurrent import GRU, LSTM, SimpleRNN
from .tensor import SymbolicTensor

__all__ = [
    "Activation", "AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "AdaptiveMaxPool1D", "AdaptiveMaxPool2D", "Add",
    "AvgPool1D", "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "ChannelScale", "ChannelShuffle", "Concatenate",
    "Conv1D", "Conv2D", "Dense", "Dropout", "Embedding", "Flatten", "GRU", "GlobalAvgPool1D", "GlobalAvgPool2D",
    "Input", "LSTM", "Layer", "LayerNorm", "LayerScale", "MaxPool1D", "MaxPool2D", "Model", "Multiply", "Permute",
    "Reshape", "Sequential", "SimpleRNN", "Split", "StochasticDepth", "SymbolicTensor",
]
