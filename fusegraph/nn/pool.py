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

    def __init__(self, pool_size=2, strides=None, padding="valid", ceil_mode: bool = False,
                 name: str | None = None) -> None:
        """`ceil_mode` (torch's, with explicit padding): the output size rounds up, the last window taking
        what is left of the input."""
        super().__init__(name)
        self.pool_size, self.strides, self.padding, self.ceil_mode = pool_size, strides, padding, ceil_mode
        try:
            self.kernel = as_tuple(pool_size, self.ndim, "pool_size")
            self.stride = self.kernel if strides is None else as_tuple(strides, self.ndim, "strides")
            resolve_padding(padding, (1,) * self.ndim, self.kernel, self.stride, (1,) * self.ndim)
        except GraphError as error:
            raise self.fail(str(error)) from None
        if not isinstance(ceil_mode, bool):
            raise self.fail(f"ceil_mode must be True or False, got {ceil_mode!r}")
        if ceil_mode and isinstance(padding, str) and padding != "valid":
            raise self.fail("ceil_mode takes explicit padding (ints, as torch's pools), not 'same'")
        self.pads: tuple[tuple[int, int], ...] = ()

    def config(self):
        return {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding,
                **({"ceil_mode": True} if self.ceil_mode else {})}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if x.type.rank != self.ndim + 2:
            layout = "(batch, channels, length)" if self.ndim == 1 else "(batch, channels, height, width)"
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes {layout}, got {x.type}")
        self.pads = resolve_padding(self.padding, x.type.shape[2:], self.kernel, self.stride, (1,) * self.ndim)
        geometry = self.pads
        if self.ceil_mode:
            geometry = tuple((begin, end + _ceil_extension(size, begin, end, k, s))
                             for size, (begin, end), k, s in zip(x.type.shape[2:], self.pads, self.kernel, self.stride))
        return [b.op(f"{self.kind}_pool{self.ndim}d", [x], name=name, layer=name,
                     kernel=self.kernel, stride=self.stride, padding=geometry, **self._counted())]

    def _counted(self) -> dict:
        return {}

    def torch_module(self, params):
        if not isinstance(self.padding, str) or self.ceil_mode:  # torch's own geometry
            padding = tuple(begin for begin, _ in self.pads)
            options = {"count_include_pad": self.count_include_pad} if self.kind == "avg" else {}
            cls = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("avg", 1): nn.AvgPool1d,
                   ("avg", 2): nn.AvgPool2d}[self.kind, self.ndim]
            return cls(self.kernel, self.stride, padding=padding, ceil_mode=self.ceil_mode, **options)
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


class _AvgPool(_Pool):
    kind = "avg"

    def __init__(self, pool_size=2, strides=None, padding="valid", ceil_mode: bool = False,
                 count_include_pad: bool = False, name: str | None = None) -> None:
        """`count_include_pad` (torch's): the average divides by the window's padding positions too."""
        self.count_include_pad = count_include_pad  # NOTE: before the checks, whose errors describe the layer
        super().__init__(pool_size, strides, padding, ceil_mode, name)
        if not isinstance(count_include_pad, bool):
            raise self.fail(f"count_include_pad must be True or False, got {count_include_pad!r}")
        self.count_include_pad = count_include_pad

    def config(self):
        return {**super().config(), **({"count_include_pad": True} if self.count_include_pad else {})}

    def _counted(self) -> dict:
        return {"counted": self.pads} if self.count_include_pad else {}


class AvgPool1D(_AvgPool):
    ndim = 1


class AvgPool2D(_AvgPool):
    ndim = 2


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


def _ceil_extension(size: int, begin: int, end: int, kernel: int, stride: int) -> int:
    """The end padding that makes a floor-mode window count equal torch's ceil_mode one (as torch, a last
    window that would start past the input and its begin padding is dropped)."""
    padded = size + begin + end
    count = -(-(padded - kernel) // stride) + 1
    if (count - 1) * stride >= size + begin:
        count -= 1
    return max((count - 1) * stride + kernel - padded, 0)


class _AdaptivePool(Layer):
    """Pools each channel to `output_size` with torch's bins (input position ranges of unequal sizes where
    the size does not divide the input's), as nn.AdaptiveAvgPool / nn.AdaptiveMaxPool."""

    ndim, kind = 2, "avg"

    def __init__(self, output_size, name: str | None = None) -> None:
        super().__init__(name)
        self.output_size = output_size
        try:
            self.size = as_tuple(output_size, self.ndim, "output_size")
        except GraphError as error:
            raise self.fail(str(error)) from None

    def config(self):
        return {"output_size": self.output_size}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if x.type.rank != self.ndim + 2:
            layout = "(batch, channels, length)" if self.ndim == 1 else "(batch, channels, height, width)"
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes {layout}, got {x.type}")
        return [b.op(f"adaptive_{self.kind}_pool{self.ndim}d", [x], name=name, layer=name, output_size=self.size)]

    def torch_module(self, params):
        return {("avg", 1): nn.AdaptiveAvgPool1d, ("avg", 2): nn.AdaptiveAvgPool2d, ("max", 1): nn.AdaptiveMaxPool1d,
                ("max", 2): nn.AdaptiveMaxPool2d}[self.kind, self.ndim](self.size if self.ndim == 2 else self.size[0])


class AdaptiveAvgPool1D(_AdaptivePool):
    ndim, kind = 1, "avg"


class AdaptiveAvgPool2D(_AdaptivePool):
    ndim, kind = 2, "avg"


class AdaptiveMaxPool1D(_AdaptivePool):
    ndim, kind = 1, "max"


class AdaptiveMaxPool2D(_AdaptivePool):
    ndim, kind = 2, "max"
