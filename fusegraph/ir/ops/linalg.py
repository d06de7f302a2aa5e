"""matmul (`a @ b` or `a @ b.T` over the last axis of `a`) and bias_add along one axis."""

from __future__ import annotations

from ..errors import GraphError
from .base import (
    OpDef,
    normalize_axis,
    register_op,
    require_float,
    require_rank,
    require_same_dtype,
    set_traits,
    set_vjp,
    shape_str,
)
from .expr import Arg


def _matmul_rule(types, attrs):
    a, b = types
    require_float(a)
    require_same_dtype(types)
    if a.rank < 2:
        raise GraphError(f"matmul needs a batched input of rank >= 2, got {shape_str(a)}")
    require_rank(b, 2, "weight")
    k, m = (b.shape[1], b.shape[0]) if attrs.get("transpose_b", False) else b.shape
    if a.shape[-1] != k:
        raise GraphError(
            f"matmul of {shape_str(a)} with weight {shape_str(b)}{' transposed' if attrs.get('transpose_b') else ''}: "
            f"the input has {a.shape[-1]} features but the weight expects {k}"
        )
    return [a.with_shape((*a.shape[:-1], m))]


def _matmul_reference(inputs, attrs, ctx):
    a, b = inputs
    return [a @ (b.t() if attrs.get("transpose_b", False) else b)]


def _bias_rule(types, attrs):
    x, b = types
    require_float(x)
    require_same_dtype(types)
    require_rank(b, 1, "bias")
    axis = normalize_axis(attrs["axis"], x.rank)
    if b.shape[0] != x.shape[axis]:
        raise GraphError(f"bias of {b.shape[0]} values does not match axis {axis} of {shape_str(x)}")
    return [x]


def _bias_reference(inputs, attrs, ctx):
    x, b = inputs
    axis = attrs["axis"] % x.dim()
    return [x + b.reshape([-1 if i == axis else 1 for i in range(x.dim())])]


def _scale_rule(types, attrs):
    x, g = types
    require_float(x)
    require_same_dtype(types)
    axis = normalize_axis(attrs["axis"], x.rank)
    if g.shape[:1] != (x.shape[axis],) or any(d != 1 for d in g.shape[1:]):
        raise GraphError(f"a per-channel scale {shape_str(g)} does not match axis {axis} of {shape_str(x)}: it must "
                         f"be ({x.shape[axis]},) or ({x.shape[axis]}, 1, ...)")
    return [x]


def _scale_reference(inputs, attrs, ctx):
    x, g = inputs
    axis = attrs["axis"] % x.dim()
    return [x * g.reshape([-1 if i == axis else 1 for i in range(x.dim())])]


def _scale_vjp(b, node, grads, needs):
    (dy,) = grads
    x, g = node.inputs
    axis = node.attrs["axis"]
    dx = b.op("channel_mul", [dy, g], axis=axis) if needs[0] else None
    if not needs[1]:
        return [dx, None]
    dg = b.op("bias_grad", [b.op("mul", [dy, x])], axis=axis)
    return [dx, dg if g.type.rank == 1 else b.op("reshape", [dg], shape=g.type.shape)]


register_op(OpDef("matmul", 2, _matmul_rule, _matmul_reference, "attrs transpose_b"))
register_op(OpDef("bias_add", 2, _bias_rule, _bias_reference, "attrs axis", math=Arg(0) + Arg(1)))
register_op(OpDef("channel_mul", 2, _scale_rule, _scale_reference,
                  "x times a per-channel scale along attr axis (a layer scale, shaped (C,) or (C, 1, ...))",
                  math=Arg(0) * Arg(1)))


# -- backward -----------------------------------------------------------------------------------
def _matmul_tn_rule(types, attrs):
    p, q = types
    require_same_dtype(types)
    if p.shape[:-1] != q.shape[:-1]:
        raise GraphError(f"matmul_tn needs the same leading dimensions, got {shape_str(p)} and {shape_str(q)}")
    return [p.with_shape((p.shape[-1], q.shape[-1]))]


def _matmul_tn_reference(inputs, attrs, ctx):
    p, q = inputs
    return [p.reshape(-1, p.shape[-1]).t() @ q.reshape(-1, q.shape[-1])]


def _bias_grad_rule(types, attrs):
    (dy,) = types
    axis = normalize_axis(attrs["axis"], dy.rank)
    return [dy.with_shape((dy.shape[axis],))]


def _bias_grad_reference(inputs, attrs, ctx):
    dy = inputs[0]
    axis = attrs["axis"] % dy.dim()
    return [dy.sum(dim=[d for d in range(dy.dim()) if d != axis])]


def _matmul_vjp(b, node, grads, needs):
    (dy,) = grads
    a, w = node.inputs
    transposed = node.attrs.get("transpose_b", False)
    da = b.op("matmul", [dy, w], transpose_b=not transposed) if needs[0] else None
    dw = (b.op("matmul_tn", [dy, a]) if transposed else b.op("matmul_tn", [a, dy])) if needs[1] else None
    return [da, dw]


def _bias_vjp(b, node, grads, needs):
    (dy,) = grads
    return [dy if needs[0] else None, b.op("bias_grad", [dy], axis=node.attrs["axis"]) if needs[1] else None]


register_op(OpDef("matmul_tn", 2, _matmul_tn_rule, _matmul_tn_reference,
                  "p^T @ q over all leading dimensions (weight gradients)"))
register_op(OpDef("bias_grad", 1, _bias_grad_rule, _bias_grad_reference, "sum over every axis but `axis`"))
set_traits(("bias_grad",), "layout_free")
set_vjp("matmul", _matmul_vjp)
set_vjp("bias_add", _bias_vjp)
set_vjp("channel_mul", _scale_vjp)

set_traits(("bias_add", "channel_mul"), "elementwise", "per_channel")
set_traits(("matmul",), "matmul_anchor")
set_traits(("matmul", "matmul_tn"), "autocast_half")  # torch.autocast's lower-precision list (linear, matmul)
