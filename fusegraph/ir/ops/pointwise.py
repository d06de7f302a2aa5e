"""Elementwise ops: activations and same-shape binary arithmetic (no implicit broadcasting)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GraphError
from .base import OpDef, register_op, require_float, require_same_dtype, same_type_unary, shape_str


def _unary(name: str, fn, doc: str = "") -> None:
    register_op(OpDef(name, 1, same_type_unary, lambda inputs, attrs, ctx: [fn(inputs[0], attrs)], doc))


_unary("relu", lambda x, a: F.relu(x))
_unary("leaky_relu", lambda x, a: F.leaky_relu(x, a.get("negative_slope", 0.01)), "attrs negative_slope")
_unary("sigmoid", lambda x, a: torch.sigmoid(x))
_unary("tanh", lambda x, a: torch.tanh(x))


def _binary_rule(types, attrs):
    a, b = types
    require_float(a)
    require_same_dtype(types)
    if a.shape != b.shape:
        raise GraphError(
            f"shapes {shape_str(a)} and {shape_str(b)} differ; elementwise ops do not broadcast, "
            "make both inputs the same shape"
        )
    return [a]


for _name, _fn in (("add", torch.add), ("sub", torch.sub), ("mul", torch.mul)):
    register_op(OpDef(_name, 2, _binary_rule, lambda inputs, attrs, ctx, fn=_fn: [fn(*inputs)]))


def _softmax_rule(types, attrs):
    (x,) = types
    require_float(x)
    if not -x.rank <= attrs.get("axis", -1) < x.rank:
        raise GraphError(f"softmax axis {attrs.get('axis')} is out of range for {shape_str(x)}")
    return [x]


register_op(OpDef("softmax", 1, _softmax_rule,
                  lambda inputs, attrs, ctx: [torch.softmax(inputs[0], attrs.get("axis", -1))], "attrs axis"))
register_op(OpDef("log_softmax", 1, _softmax_rule,
                  lambda inputs, attrs, ctx: [torch.log_softmax(inputs[0], attrs.get("axis", -1))], "attrs axis"))
