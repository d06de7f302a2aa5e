"""Max / average pooling (1-D, 2-D) and global average pooling over NC(L|HW) activations.

Padding is explicit per side like conv's. Max pooling ignores padding; average pooling divides by
the number of real (unpadded) elements in each window, like Keras and `count_include_pad=False`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GraphError
from .base import OpDef, register_op, require_float, shape_str
from .conv import torch_pad_arg, windowed_size


def _pool_rule(ndim: int):
    def infer(types, attrs):
        (x,) = types
        if x.rank != ndim + 2:
            raise GraphError(
                f"pool{ndim}d takes (batch, channels, {'length' if ndim == 1 else 'height, width'}), got {shape_str(x)}"
            )
        require_float(x)
        out = []
        for size, k, s, pads in zip(x.shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"]):
            if max(pads) > k // 2:
                raise GraphError(f"pool padding {pads} is more than half the window {k}; windows would see only padding")
            n = windowed_size(size, pads, k, s)
            if n <= 0:
                raise GraphError(
                    f"pool window {k} does not fit the input {shape_str(x)} (padded size {size + sum(pads)}): "
                    "the output would be empty; use a smaller pool_size, padding='same', or pool earlier less often"
                )
            out.append(n)
        return [x.with_shape((*x.shape[:2], *out))]

    return infer


def _max_reference(ndim: int):
    pool = F.max_pool1d if ndim == 1 else F.max_pool2d

    def reference(inputs, attrs, ctx):
        x = F.pad(inputs[0], torch_pad_arg(attrs["padding"]), value=float("-inf"))
        return [pool(x, attrs["kernel"], attrs["stride"])]

    return reference


def _avg_reference(ndim: int):
    pool = F.avg_pool1d if ndim == 1 else F.avg_pool2d

    def reference(inputs, attrs, ctx):
        x = inputs[0]
        pad = torch_pad_arg(attrs["padding"])
        sums = pool(F.pad(x, pad), attrs["kernel"], attrs["stride"])
        counts = pool(F.pad(torch.ones_like(x[:1, :1]), pad), attrs["kernel"], attrs["stride"])
        return [sums / counts]

    return reference


def _global_rule(ndim: int):
    def infer(types, attrs):
        (x,) = types
        if x.rank != ndim + 2:
            raise GraphError(f"global_avg_pool{ndim}d takes a rank-{ndim + 2} input, got {shape_str(x)}")
        require_float(x)
        return [x.with_shape(x.shape[:2])]

    return infer


def _global_reference(inputs, attrs, ctx):
    x = inputs[0]
    return [x.mean(dim=tuple(range(2, x.dim())))]


for _ndim in (1, 2):
    doc = "attrs kernel, stride, padding ((begin, end) per dim)"
    register_op(OpDef(f"max_pool{_ndim}d", 1, _pool_rule(_ndim), _max_reference(_ndim), doc))
    register_op(OpDef(f"avg_pool{_ndim}d", 1, _pool_rule(_ndim), _avg_reference(_ndim), doc))
    register_op(OpDef(f"global_avg_pool{_ndim}d", 1, _global_rule(_ndim), _global_reference, "mean over space"))
