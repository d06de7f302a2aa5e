"""conv1d / conv2d: cross-correlation of NC(L|HW) activations with OI(L|HW) weights, no bias.

Padding is explicit per side, `((begin, end), ...)`, so Keras' asymmetric 'same' is representable;
`resolve_padding` turns the DSL's spellings into it.
"""

from __future__ import annotations

from math import ceil

import torch.nn.functional as F

from ..errors import GraphError
from ..types import as_int
from .base import (
    OpDef,
    register_op,
    require_float,
    require_rank,
    require_same_dtype,
    set_traits,
    set_vjp,
    shape_str,
)

Pads = tuple[tuple[int, int], ...]


def as_tuple(value, ndim: int, what: str) -> tuple[int, ...]:
    """An int or a sequence of `ndim` ints, each positive."""
    single = as_int(value)
    try:
        items = (single,) * ndim if single is not None else tuple(value)
    except TypeError:
        items = ()
    values = tuple(as_int(v) for v in items)
    if len(values) != ndim or any(v is None for v in values):
        raise GraphError(f"{what} must be an int or {ndim} ints, got {value!r}")
    if any(v <= 0 for v in values):
        raise GraphError(f"{what} must be positive, got {value!r}")
    return values  # type: ignore[return-value]


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
    given = padding
    if as_int(padding) is not None:
        padding = (padding,) * ndim
    try:
        values = tuple(as_int(p) for p in padding)
    except TypeError:
        raise GraphError(f"padding {given!r} is not one of 'valid', 'same', an int or {ndim} ints") from None
    if len(values) != ndim or not all(p is not None and p >= 0 for p in values):
        raise GraphError(f"padding must be 'valid', 'same', a non-negative int or {ndim} of them, got {given!r}")
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
        groups = attrs.get("groups", 1)
        if not isinstance(groups, int) or groups < 1 or w.shape[0] % groups:
            raise GraphError(f"groups={groups!r} must be a positive int dividing the weight's {w.shape[0]} filters")
        if w.shape[1] * groups != x.shape[1]:
            wanted = w.shape[1] * groups
            raise GraphError(
                f"channel mismatch: the input has {x.shape[1]} channels but the weight {shape_str(w)} "
                f"{f'in {groups} groups ' if groups > 1 else ''}expects {wanted}; make the previous layer produce "
                f"{wanted} channels"
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
        pads, groups = attrs["padding"], attrs.get("groups", 1)
        if any(b != e for b, e in pads):
            return [conv(F.pad(x, torch_pad_arg(pads)), w, stride=attrs["stride"], dilation=attrs["dilation"],
                         groups=groups)]
        return [conv(x, w, stride=attrs["stride"], padding=tuple(b for b, _ in pads), dilation=attrs["dilation"],
                     groups=groups)]

    return reference


for _ndim in (1, 2):
    register_op(OpDef(f"conv{_ndim}d", 2, _conv_rule(_ndim), _conv_reference(_ndim),
                      "cross-correlation; attrs stride, padding ((begin, end) per dim), dilation, groups (input "
                      "and output channels in that many groups, each filter reading its group's: depthwise at groups = "
                      "channels)"))


# -- backward: the input gradient and the weight gradient of a convolution ----------------------
def _bwd_input_rule(ndim: int):
    def infer(types, attrs):
        dy, w = types
        require_rank(dy, ndim + 2, "output gradient")
        require_rank(w, ndim + 2, "weight")
        require_same_dtype(types)
        sizes = tuple(attrs["input_size"])
        for size, k, s, d, pads, out in zip(sizes, w.shape[2:], attrs["stride"], attrs["dilation"],
                                            attrs["padding"], dy.shape[2:]):
            if windowed_size(size, pads, k, s, d) != out:
                raise GraphError(f"input size {sizes} does not give the output gradient's {shape_str(dy)}")
        return [dy.with_shape((dy.shape[0], w.shape[1] * attrs.get("groups", 1), *sizes))]

    return infer


def _bwd_weight_rule(ndim: int):
    def infer(types, attrs):
        x, dy = types
        require_rank(x, ndim + 2, "input")
        require_same_dtype(types)
        return [x.with_shape((dy.shape[1], x.shape[1] // attrs.get("groups", 1), *attrs["kernel_size"]))]

    return infer


def _padded_size(x_size, pads):
    return [n + b + e for n, (b, e) in zip(x_size, pads)]


def _bwd_input_reference(ndim: int):
    from torch.nn import grad as nn_grad

    grad_input = nn_grad.conv1d_input if ndim == 1 else nn_grad.conv2d_input

    def reference(inputs, attrs, ctx):
        dy, w = inputs
        pads = attrs["padding"]
        groups = attrs.get("groups", 1)
        padded = [dy.shape[0], w.shape[1] * groups, *_padded_size(attrs["input_size"], pads)]
        dx = grad_input(padded, w, dy, stride=attrs["stride"], padding=0, dilation=attrs["dilation"], groups=groups)
        crop = [slice(None), slice(None)] + [slice(b, b + n) for n, (b, _) in zip(attrs["input_size"], pads)]
        return [dx[tuple(crop)].contiguous()]

    return reference


def _bwd_weight_reference(ndim: int):
    from torch.nn import grad as nn_grad

    grad_weight = nn_grad.conv1d_weight if ndim == 1 else nn_grad.conv2d_weight

    def reference(inputs, attrs, ctx):
        x, dy = inputs
        groups = attrs.get("groups", 1)
        shape = [dy.shape[1], x.shape[1] // groups, *attrs["kernel_size"]]
        return [grad_weight(F.pad(x, torch_pad_arg(attrs["padding"])), shape, dy, stride=attrs["stride"], padding=0,
                            dilation=attrs["dilation"], groups=groups)]

    return reference


def _conv_vjp(ndim: int):
    def vjp(b, node, grads, needs):
        (dy,) = grads
        x, w = node.inputs
        geometry = {k: node.attrs[k] for k in ("stride", "padding", "dilation", "groups") if k in node.attrs}
        dx = b.op(f"conv{ndim}d_bwd_input", [dy, w], input_size=tuple(x.type.shape[2:]), **geometry) if needs[0] else None
        dw = b.op(f"conv{ndim}d_bwd_weight", [x, dy], kernel_size=tuple(w.type.shape[2:]), **geometry) if needs[1] else None
        return [dx, dw]

    return vjp


for _ndim in (1, 2):
    register_op(OpDef(f"conv{_ndim}d_bwd_input", 2, _bwd_input_rule(_ndim), _bwd_input_reference(_ndim),
                      "gradient of a convolution's input; attrs as the conv plus input_size"))
    register_op(OpDef(f"conv{_ndim}d_bwd_weight", 2, _bwd_weight_rule(_ndim), _bwd_weight_reference(_ndim),
                      "gradient of a convolution's weight; attrs as the conv plus kernel_size"))
    set_vjp(f"conv{_ndim}d", _conv_vjp(_ndim))

set_traits(("conv1d", "conv2d"), "conv_anchor")
# NOTE: the ops torch.autocast runs in half precision (its "lower precision" list); mixed precision here too
set_traits(("conv1d", "conv2d", "conv1d_bwd_input", "conv2d_bwd_input", "conv1d_bwd_weight", "conv2d_bwd_weight"),
           "autocast_half")
set_traits(("conv1d_bwd_weight", "conv2d_bwd_weight"), "conv_weight_gradient")
set_traits(("conv2d", "conv2d_bwd_input", "conv2d_bwd_weight"), "layout_free")
