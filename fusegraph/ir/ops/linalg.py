"""matmul (`a @ b` or `a @ b.T` over the last axis of `a`) and bias_add along one axis."""

from __future__ import annotations

from ..errors import GraphError
from .base import OpDef, normalize_axis, register_op, require_float, require_rank, require_same_dtype, shape_str


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


register_op(OpDef("matmul", 2, _matmul_rule, _matmul_reference, "attrs transpose_b"))
register_op(OpDef("bias_add", 2, _bias_rule, _bias_reference, "attrs axis"))
