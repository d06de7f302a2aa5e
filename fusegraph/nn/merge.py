"""Layers that combine several tensors: Add, Multiply, Concatenate, and ChannelScale."""

from __future__ import annotations

import torch
from torch import nn

from ..ir import GraphError, as_int
from .layer import Layer


class Sum(nn.Module):
    """The torch side of Add: elementwise sum of its inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


class Cat(nn.Module):
    """The torch side of Concatenate: torch.cat along one axis."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class _Fold(Layer):
    """Two or more tensors of the same shape (no broadcasting), folded from the left by one elementwise op."""

    op = ""

    def emit(self, b, inputs, name):
        if len(inputs) < 2:
            raise GraphError(f"layer '{name}' ({type(self).__name__}) needs at least two inputs, got {len(inputs)}")
        total = inputs[0]
        for i, x in enumerate(inputs[1:], start=1):
            total = b.op(self.op, [total, x], name=name if i == len(inputs) - 1 else f"{name}.{i}", layer=name)
        return [total]


class Add(_Fold):
    """Elementwise sum of two or more tensors of the same shape (no broadcasting)."""

    op = "add"

    def torch_module(self, params):
        return Sum()


class Concatenate(Layer):
    """Concatenate along `axis` (counting the batch as axis 0): 1 is channels / features in PyTorch layout."""

    def __init__(self, axis: int = 1, name: str | None = None) -> None:
        super().__init__(name)
        self.axis = axis
        if as_int(axis) is None:
            raise self.fail(f"axis must be an integer (1 is channels / features; the batch is axis 0), got {axis!r}")
        self.axis = as_int(axis)

    def config(self):
        return {"axis": self.axis}

    def emit(self, b, inputs, name):
        return [b.op("concat", list(inputs), name=name, layer=name, axis=self.axis)]

    def torch_module(self, params):
        return Cat(self.axis)


class Product(nn.Module):
    """The torch side of Multiply: elementwise product of its inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total * x
        return total


class Multiply(_Fold):
    """Elementwise product of two or more tensors of the same shape (no broadcasting)."""

    op = "mul"

    def torch_module(self, params):
        return Product()


class ScaleByChannel(nn.Module):
    """The torch side of ChannelScale: x * s[:, :, None, None]."""

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x * s.reshape(*s.shape, *([1] * (x.dim() - 2)))


class ChannelScale(Layer):
    """`ChannelScale()([x, s])`: each channel of each sample of x (batch, channels, ...) times its weight in
    s (batch, channels): squeeze-and-excitation's gate."""

    def emit(self, b, inputs, name):
        if len(inputs) != 2:
            raise GraphError(f"layer '{name}' (ChannelScale) takes [x, s], got {len(inputs)} inputs")
        return [b.op("channel_scale", list(inputs), name=name, layer=name)]

    def torch_module(self, params):
        return ScaleByChannel()
