"""Pooling layers: MaxPool / AvgPool (1-D, 2-D) and global average pooling."""

from __future__ import annotations

import torch
from torch import nn

from ..ir import GraphError
from ..ir.ops.conv import as_tuple, resolve_padding
from .layer import Layer


class _Pool(Layer):
    ndim = 2
    kind = "max"

    def __init__(self, pool_size=2, strides=None, padding="valid", name: str | None = None) -> None:
        super().__init__(name)
        self.pool_size, self.strides, self.padding = pool_size, strides, padding
        try:
            self.kernel = as_tuple(pool_size, self.ndim, "pool_size")
            self.stride = self.kernel if strides is None else as_tuple(strides, self.ndim, "strides")
            resolve_padding(padding, (1,) * self.ndim, self.kernel, self.stride, (1,) * self.ndim)
        except GraphError as error:
            raise self.fail(str(error)) from None
        self.pads: tuple[tuple[int, int], ...] = ()

    def config(self):
        return {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if x.type.rank != self.ndim + 2:
            layout = "(batch, channels, length)" if self.ndim == 1 else "(batch, channels, height, width)"
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes {layout}, got {x.type}")
        self.pads = resolve_padding(self.padding, x.type.shape[2:], self.kernel, self.stride, (1,) * self.ndim)
        return [b.op(f"{self.kind}_pool{self.ndim}d", [x], name=name, layer=name,
                     kernel=self.kernel, stride=self.stride, padding=self.pads)]

    def torch_module(self, params):
        # NOTE: Keras 'same' puts the odd pad at the end; torch pads symmetrically. With stride > 1
        # ceil_mode adds exactly that end window; with stride 1 we pad one more in front and drop
        # the extra first window instead. ('same' pads differ by at most one.)
        asymmetric = [e != b for b, e in self.pads]
        front = tuple(b + (asym and s == 1) for (b, _), asym, s in zip(self.pads, asymmetric, self.stride))
        ceil = any(asym and s > 1 for asym, s in zip(asymmetric, self.stride))
        if self.kind == "max":
            cls = nn.MaxPool1d if self.ndim == 1 else nn.MaxPool2d
            pool = cls(self.kernel, self.stride, padding=front, ceil_mode=ceil)
        else:
            cls = nn.AvgPool1d if self.ndim == 1 else nn.AvgPool2d
            pool = cls(self.kernel, self.stride, padding=front, ceil_mode=ceil, count_include_pad=False)
        crop = tuple(asym and s == 1 for asym, s in zip(asymmetric, self.stride))
        return nn.Sequential(pool, DropFirstWindow(crop)) if any(crop) else pool


class DropFirstWindow(nn.Module):
    """Drops the first output position along each spatial dim flagged in `dims`."""

    def __init__(self, dims: tuple[bool, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = [slice(None), slice(None)] + [slice(1, None) if drop else slice(None) for drop in self.dims]
        return x[tuple(index)]


class MaxPool1D(_Pool):
    ndim, kind = 1, "max"


class MaxPool2D(_Pool):
    ndim, kind = 2, "max"


class AvgPool1D(_Pool):
    ndim, kind = 1, "avg"


class AvgPool2D(_Pool):
    ndim, kind = 2, "avg"


class _GlobalAvgPool(Layer):
    ndim = 2

    def emit(self, b, inputs, name):
        (x,) = inputs
        if x.type.rank != self.ndim + 2:
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes a rank-{self.ndim + 2} "
                             f"(batch, channels, ...) input, got {x.type}")
        return [b.op(f"global_avg_pool{self.ndim}d", [x], name=name, layer=name)]

    def torch_module(self, params):
        pool = nn.AdaptiveAvgPool1d(1) if self.ndim == 1 else nn.AdaptiveAvgPool2d(1)
        return nn.Sequential(pool, nn.Flatten())


class GlobalAvgPool1D(_GlobalAvgPool):
    ndim = 1


class GlobalAvgPool2D(_GlobalAvgPool):
    ndim = 2
