"""conv1d / conv2d: cross-correlation of NC(L|HW) activations with OI(L|HW) weights, no bias.

Padding is explicit per side, `((begin, end), ...)`, so Keras' asymmetric 'same' is representable;
`resolve_padding` turns the DSL's spellings into it.
"""

from __future__ import annotations

from math import ceil

import torch.nn.functional as F

from ..errors import GraphError
from .base import OpDef, register_op, require_float, require_rank, require_same_dtype, shape_str

Pads = tuple[tuple[int, int], ...]


def as_tuple(value, ndim: int, what: str) -> tuple[int, ...]:
    """An int or a sequence of `ndim` ints, each positive."""
    values = (value,) * ndim if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != ndim or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise GraphError(f"{what} must be an int or {ndim} ints, got {value!r}")
    if any(v <= 0 for v in values):
        raise GraphError(f"{what} must be positive, got {value!r}")
    return values


def resolve_padding(padding, sizes, kernel, stride, dilation) -> Pads:
    """'valid' | 'same' | int | per-dim ints → explicit (begin, end) pads per spatial dim.

    'same' follows Keras: output = ceil(input / stride), the odd pixel of padding at the end.
    """
    ndim = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            pads = []
            for size, k, s, d in zip(sizes, kernel, stride, dilation):
                total = max((ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise GraphError(f"padding {padding!r} is not one of 'valid', 'same', an int or {ndim} ints")
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding,) * ndim
    try:
        values = tuple(padding)
    except TypeError:
        raise GraphError(f"padding {padding!r} is not one of 'valid', 'same', an int or {ndim} ints") from None
    if len(values) != ndim or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in values):
        raise GraphError(f"padding must be 'valid', 'same', a non-negative int or {ndim} of them, got {padding!r}")
    return tuple((p, p) for p in values)


def windowed_size(size: int, pads: tuple[int, int], k: int, s: int, d: int = 1) -> int:
    """Output length of a sliding window; <= 0 when the window does not fit."""
    return (size + pads[0] + pads[1] - (k - 1) * d - 1) // s + 1


def torch_pad_arg(pads: Pads) -> list[int]:
    """F.pad wants the last dimension first."""
    return [p for pair in reversed(pads) for p in pair]


def _conv_rule(ndim: int):
    def infer(types, attrs):
        x, w = types
        require_rank(x, ndim + 2, "input", f"conv{ndim}d takes (batch, channels, {'length' if ndim == 1 else 'height, width'})")
        require_rank(w, ndim + 2, "weight")
        require_float(x)
        require_same_dtype(types)
        if w.shape[1] != x.shape[1]:
            raise GraphError(
                f"channel mismatch: the input has {x.shape[1]} channels but the weight {shape_str(w)} "
                f"expects {w.shape[1]}; make the previous layer produce {w.shape[1]} channels"
            )
        out = []
        for axis, (size, k, s, d, pads) in enumerate(
            zip(x.shape[2:], w.shape[2:], attrs["stride"], attrs["dilation"], attrs["padding"])
        ):
            padded = size + pads[0] + pads[1]
            if (k - 1) * d + 1 > padded:
                raise GraphError(
                    f"kernel {k} (dilation {d}, spanning {(k - 1) * d + 1}) is larger than the padded input "
                    f"{padded} along spatial axis {axis} of input {shape_str(x)}; use a smaller kernel or padding='same'"
                )
            out.append(windowed_size(size, pads, k, s, d))
        return [x.with_shape((x.shape[0], w.shape[0], *out))]

    return infer


def _conv_reference(ndim: int):
    conv = F.conv1d if ndim == 1 else F.conv2d

    def reference(inputs, attrs, ctx):
        x, w = inputs
        pads = attrs["padding"]
        if any(b != e for b, e in pads):
            return [conv(F.pad(x, torch_pad_arg(pads)), w, stride=attrs["stride"], dilation=attrs["dilation"])]
        return [conv(x, w, stride=attrs["stride"], padding=tuple(b for b, _ in pads), dilation=attrs["dilation"])]

    return reference


for _ndim in (1, 2):
    register_op(OpDef(f"conv{_ndim}d", 2, _conv_rule(_ndim), _conv_reference(_ndim),
                      "cross-correlation; attrs stride, padding ((begin, end) per dim), dilation"))
