"""Max / average pooling (1-D, 2-D) and global average pooling over NC(L|HW) activations.

Padding is explicit per side like conv's. Max pooling ignores padding; average pooling divides by
the number of real (unpadded) elements in each window, like Keras and `count_include_pad=False`.
"""

from __future__ import annotations

from math import prod

import torch
import torch.nn.functional as F

from ..errors import GraphError
from ..types import TensorType
from .base import OpDef, register_op, require_float, set_traits, set_vjp, shape_str
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
            if pads[0] > k // 2:
                raise GraphError(f"pool padding {pads} is more than half the window {k}; windows would see only padding")
            n = windowed_size(size, pads, k, s)
            if n <= 0:
                raise GraphError(
                    f"pool window {k} does not fit the input {shape_str(x)} (padded size {size + sum(pads)}): "
                    "the output would be empty; use a smaller pool_size, padding='same', or pool earlier less often"
                )
            if (n - 1) * s - pads[0] >= size:  # (a ceil-mode end pad: as torch, no window starts past the input)
                raise GraphError(f"pool padding {pads} leaves the last window {k} entirely in the padding")
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
        # the divisor: the window's positions in the input and in the padding counted (`counted`: torch's
        # count_include_pad padding, not a ceil-mode end pad)
        counted = attrs.get("counted") or ((0, 0),) * (x.dim() - 2)
        region = F.pad(torch.ones_like(x[:1, :1]), torch_pad_arg(counted), value=1.0)
        rest = tuple((b - cb, e - ce) for (b, e), (cb, ce) in zip(attrs["padding"], counted))
        counts = pool(F.pad(region, torch_pad_arg(rest)), attrs["kernel"], attrs["stride"])
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
    doc = "attrs kernel, stride, padding ((begin, end) per dim); an average pool's counted: the padding its divisor counts"
    register_op(OpDef(f"max_pool{_ndim}d", 1, _pool_rule(_ndim), _max_reference(_ndim), doc))
    register_op(OpDef(f"avg_pool{_ndim}d", 1, _pool_rule(_ndim), _avg_reference(_ndim), doc))
    register_op(OpDef(f"global_avg_pool{_ndim}d", 1, _global_rule(_ndim), _global_reference, "mean over space"))


# -- backward -----------------------------------------------------------------------------------
def _pool_bwd_rule(types, attrs):
    return [types[-1]] if len(types) == 2 else [types[0].with_shape((*types[0].shape[:2], *attrs["input_size"]))]


def _autograd_reference(forward):
    """A pool's gradient as torch.autograd computes it through `forward` (torch's own kernels)."""

    def reference(inputs, attrs, ctx):
        import torch

        dy = inputs[0]
        if len(inputs) == 2:
            x = inputs[1].detach().requires_grad_(True)
        else:
            x = torch.zeros((*dy.shape[:2], *attrs["input_size"]), dtype=dy.dtype, requires_grad=True)
        with torch.enable_grad():
            (y,) = forward([x], attrs, ctx)
            (dx,) = torch.autograd.grad(y, x, dy)
        return [dx]

    return reference


def _pool_vjp(kind: str, ndim: int):
    def vjp(b, node, grads, needs):
        (dy,) = grads
        (x,) = node.inputs
        geometry = {k: node.attrs[k] for k in ("kernel", "stride", "padding", "counted") if k in node.attrs}
        if kind == "max":
            return [b.op(f"max_pool{ndim}d_bwd", [dy, x], **geometry)]
        return [b.op(f"avg_pool{ndim}d_bwd", [dy], input_size=tuple(x.type.shape[2:]), **geometry)]

    return vjp


def _global_vjp(ndim: int):
    def vjp(b, node, grads, needs):
        return [b.op(f"global_avg_pool{ndim}d_bwd", [grads[0]], input_size=tuple(node.inputs[0].type.shape[2:]))]

    return vjp


def _global_bwd_reference(inputs, attrs, ctx):
    dy = inputs[0]
    size = attrs["input_size"]
    scale = 1.0 / float(prod(size))
    return [(dy * scale).reshape(*dy.shape, *([1] * len(size))).expand(*dy.shape, *size).contiguous()]


for _ndim in (1, 2):
    register_op(OpDef(f"max_pool{_ndim}d_bwd", 2, _pool_bwd_rule, _autograd_reference(_max_reference(_ndim)),
                      "gradient of a max pool: to the first maximum of each window; inputs dy, x"))
    register_op(OpDef(f"avg_pool{_ndim}d_bwd", 1, _pool_bwd_rule, _autograd_reference(_avg_reference(_ndim)),
                      "gradient of an average pool; attrs as the pool plus input_size"))
    register_op(OpDef(f"global_avg_pool{_ndim}d_bwd", 1, _pool_bwd_rule, _global_bwd_reference,
                      "gradient of a global average pool; attrs input_size"))
    set_vjp(f"max_pool{_ndim}d", _pool_vjp("max", _ndim))
    set_vjp(f"avg_pool{_ndim}d", _pool_vjp("avg", _ndim))
    set_vjp(f"global_avg_pool{_ndim}d", _global_vjp(_ndim))


# -- max pooling that saves where each maximum was (one byte per pooled output) --------------------
def _argmax_rule(ndim: int):
    base = _pool_rule(ndim)

    def infer(types, attrs):
        (y,) = base(types, attrs)
        if prod(attrs["kernel"]) > 127:
            raise GraphError(f"a {attrs['kernel']} window has more positions than an int8 index holds")
        return [y, TensorType(y.shape, "int8")]

    return infer


def _windows(x, attrs):
    """(N, C, out..., window positions) of the -inf padded input, positions in row-major order."""
    padded = F.pad(x, torch_pad_arg(attrs["padding"]), value=float("-inf"))
    for axis, (k, s) in enumerate(zip(attrs["kernel"], attrs["stride"])):
        padded = padded.unfold(2 + axis, k, s)
    ndim = len(attrs["kernel"])
    return padded.reshape(*padded.shape[:2 + ndim], -1)


def _argmax_reference(inputs, attrs, ctx):
    windows = _windows(inputs[0], attrs)
    values, positions = windows.max(dim=-1)  # the first maximum, as PyTorch's pool
    # NOTE: PyTorch's pool takes a window's last NaN (its test is `v > best or isnan(v)`)
    nans = windows.isnan()
    last_nan = nans.shape[-1] - 1 - nans.flip(-1).to(torch.int8).argmax(dim=-1)
    positions = torch.where(nans.any(dim=-1), last_nan, positions)
    return [values, positions.to(torch.int8)]


def _bwd_idx_rule(types, attrs):
    dy, idx = types
    if idx.dtype != "int8" or idx.shape != dy.shape:
        raise GraphError(f"window positions must be int8 shaped like the gradient {dy}, got {idx}")
    return [dy.with_shape((*dy.shape[:2], *attrs["input_size"]))]


def _bwd_idx_reference(inputs, attrs, ctx):
    dy, idx = inputs
    kernel, stride, pads = attrs["kernel"], attrs["stride"], attrs["padding"]
    if len(kernel) == 1:  # as 2-D with height 1
        dy, idx = dy.unsqueeze(2), idx.unsqueeze(2)
        kernel, stride, pads = (1, *kernel), (1, *stride), ((0, 0), *pads)
    size = (1, *attrs["input_size"]) if len(attrs["kernel"]) == 1 else tuple(attrs["input_size"])
    padded = [n + b + e for n, (b, e) in zip(size, pads)]
    count = prod(kernel)
    spread = F.one_hot(idx.long(), count).to(dy.dtype) * dy.unsqueeze(-1)  # (N, C, OH, OW, window)
    columns = spread.permute(0, 1, 4, 2, 3).reshape(dy.shape[0], dy.shape[1] * count, -1)
    dx = F.fold(columns, padded, kernel, stride=stride)  # sums where windows overlap
    dx = dx[:, :, pads[0][0]:pads[0][0] + size[0], pads[1][0]:pads[1][0] + size[1]]
    return [dx.squeeze(2).contiguous() if len(attrs["kernel"]) == 1 else dx.contiguous()]


def _argmax_vjp(ndim: int):
    def vjp(b, node, grads, needs):
        dy, _ = grads
        geometry = {k: node.attrs[k] for k in ("kernel", "stride", "padding")}
        return [b.op(f"max_pool{ndim}d_bwd_idx", [dy, node.outputs[1]],
                     input_size=tuple(node.inputs[0].type.shape[2:]), **geometry)]

    return vjp


for _ndim in (1, 2):
    register_op(OpDef(f"max_pool{_ndim}d_argmax", 1, _argmax_rule(_ndim), _argmax_reference,
                      "max pooling that also outputs each maximum's window position (int8, row-major, first max)"))
    register_op(OpDef(f"max_pool{_ndim}d_bwd_idx", 2, _bwd_idx_rule, _bwd_idx_reference,
                      "gradient of a max pool from saved window positions; attrs as the pool plus input_size"))
    set_vjp(f"max_pool{_ndim}d_argmax", _argmax_vjp(_ndim))

set_traits(("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "max_pool1d_argmax", "max_pool2d_argmax"), "pool")
set_traits(("max_pool1d_bwd", "max_pool2d_bwd", "avg_pool1d_bwd", "avg_pool2d_bwd", "max_pool1d_bwd_idx",
            "max_pool2d_bwd_idx"), "pool_gradient")
set_traits(("max_pool1d", "max_pool2d", "max_pool1d_argmax", "max_pool2d_argmax", "max_pool1d_bwd", "max_pool2d_bwd",
            "max_pool1d_bwd_idx", "max_pool2d_bwd_idx"), "max_pool")
set_traits(("max_pool1d_argmax", "max_pool2d_argmax"), "saves_positions")
set_traits(("max_pool1d_bwd_idx", "max_pool2d_bwd_idx"), "from_positions")
set_traits(("max_pool2d", "avg_pool2d", "max_pool2d_argmax", "max_pool2d_bwd", "avg_pool2d_bwd", "max_pool2d_bwd_idx"),
           "layout_follows")
set_traits(("global_avg_pool2d", "global_avg_pool2d_bwd"), "layout_free")
set_traits(("global_avg_pool1d", "global_avg_pool2d"), "global_pool")
# the variant a training graph runs: it saves window positions for the gradient instead of the input
WITH_POSITIONS = {"max_pool1d": "max_pool1d_argmax", "max_pool2d": "max_pool2d_argmax"}


# -- adaptive pooling ------------------------------------------------------------------------------
# Output position i of a dim of size n pools input positions [floor(i n / out), ceil((i + 1) n / out)):
# torch's bins, of unequal sizes when out does not divide n (and overlapping, or repeating one position,
# when out > n).
def _adaptive_rule(ndim: int):
    def infer(types, attrs):
        (x,) = types
        if x.rank != ndim + 2:
            raise GraphError(f"adaptive pool{ndim}d takes (batch, channels, {'length' if ndim == 1 else 'height, width'})"
                             f", got {shape_str(x)}")
        require_float(x)
        size = attrs["output_size"]
        if len(size) != ndim or not all(isinstance(s, int) and s > 0 for s in size):
            raise GraphError(f"adaptive pool{ndim}d: output_size must be {ndim} positive ints, got {size!r}")
        return [x.with_shape((*x.shape[:2], *size))]

    return infer


def _adaptive_reference(kind: str, ndim: int):
    pool = {("avg", 1): F.adaptive_avg_pool1d, ("avg", 2): F.adaptive_avg_pool2d,
            ("max", 1): F.adaptive_max_pool1d, ("max", 2): F.adaptive_max_pool2d}[kind, ndim]
    return lambda inputs, attrs, ctx: [pool(inputs[0], attrs["output_size"])]


def _adaptive_vjp(kind: str, ndim: int):
    def vjp(b, node, grads, needs):
        (x,) = node.inputs
        if kind == "max":  # the bins' maxima found again in the input
            return [b.op(f"adaptive_max_pool{ndim}d_bwd", [grads[0], x], output_size=node.attrs["output_size"])]
        return [b.op(f"adaptive_avg_pool{ndim}d_bwd", [grads[0]], output_size=node.attrs["output_size"],
                     input_size=tuple(x.type.shape[2:]))]

    return vjp


for _ndim in (1, 2):
    for _kind in ("avg", "max"):
        register_op(OpDef(f"adaptive_{_kind}_pool{_ndim}d", 1, _adaptive_rule(_ndim), _adaptive_reference(_kind, _ndim),
                          "torch's adaptive pooling to attr output_size"))
        set_vjp(f"adaptive_{_kind}_pool{_ndim}d", _adaptive_vjp(_kind, _ndim))
    register_op(OpDef(f"adaptive_avg_pool{_ndim}d_bwd", 1, _pool_bwd_rule,
                      _autograd_reference(_adaptive_reference("avg", _ndim)),
                      "gradient of an adaptive average pool; attrs output_size, input_size"))
    register_op(OpDef(f"adaptive_max_pool{_ndim}d_bwd", 2, _pool_bwd_rule,
                      _autograd_reference(_adaptive_reference("max", _ndim)),
                      "gradient of an adaptive max pool: to each bin's maximum (its last NaN); inputs dy, x"))

set_traits(("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool1d_bwd", "adaptive_max_pool2d_bwd"),
           "max_pool")
set_traits(("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_avg_pool2d_bwd", "adaptive_max_pool2d_bwd"),
           "layout_follows")


# -- per-sample channel scaling (squeeze-and-excitation) -------------------------------------------
def _channel_scale_rule(types, attrs):
    x, s = types
    require_float(x)
    if x.rank < 3 or s.rank != 2 or s.shape[1] != x.shape[1]:
        raise GraphError(f"channel_scale scales the channels of {shape_str(x)} by (batch, {x.shape[1]}) weights, "
                         f"got {shape_str(s)}")
    return [x]


def _channel_scale_reference(inputs, attrs, ctx):
    x, s = inputs
    return [x * s.reshape(*s.shape, *([1] * (x.dim() - 2)))]


def _channel_scale_grad_reference(inputs, attrs, ctx):
    dy, x = inputs
    return [(dy * x).sum(dim=tuple(range(2, x.dim())))]


def _channel_scale_vjp(b, node, grads, needs):
    (dy,) = grads
    x, s = node.inputs
    return [b.op("channel_scale", [dy, s]) if needs[0] else None,
            b.op("channel_scale_grad", [dy, x]) if needs[1] else None]


register_op(OpDef("channel_scale", 2, _channel_scale_rule, _channel_scale_reference,
                  "x (batch, channels, ...) times per-sample channel weights s (batch, channels): "
                  "squeeze-and-excitation's x * s[:, :, None, None]"))
register_op(OpDef("channel_scale_grad", 2,
                  lambda types, attrs: [types[0].with_shape(types[0].shape[:2])], _channel_scale_grad_reference,
                  "the channel weights' gradient: sum over positions of dy * x, per sample and channel"))
set_vjp("channel_scale", _channel_scale_vjp)
set_traits(("channel_scale", "channel_scale_grad"), "layout_follows")  # x, dy and the result stored alike
