"""Elementwise ops: activations and same-shape binary arithmetic (no implicit broadcasting)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GraphError
from .base import OpDef, register_op, require_float, require_same_dtype, same_type_unary, set_traits, set_vjp, shape_str

LEAKY_SLOPE = 0.01  # leaky_relu's negative_slope when a node does not set one: PyTorch's default


def _unary(name: str, fn, doc: str = "") -> None:
    register_op(OpDef(name, 1, same_type_unary, lambda inputs, attrs, ctx: [fn(inputs[0], attrs)], doc))


_unary("relu", lambda x, a: F.relu(x))
_unary("leaky_relu", lambda x, a: F.leaky_relu(x, a.get("negative_slope", LEAKY_SLOPE)), "attrs negative_slope")
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


# -- backward -----------------------------------------------------------------------------------
def _grad_rule(types, attrs):
    return _binary_rule(types, attrs)


_BACKWARD = {
    # PyTorch's rules, so ties and saturation give its numbers: relu uses its output, leaky_relu its input
    "relu_bwd": lambda dy, y, a: torch.where(y > 0, dy, torch.zeros_like(dy)),
    "leaky_relu_bwd": lambda dy, x, a: torch.where(x > 0, dy, dy * a.get("negative_slope", LEAKY_SLOPE)),
    "sigmoid_bwd": lambda dy, y, a: dy * (1 - y) * y,
    "tanh_bwd": lambda dy, y, a: dy * (1 - y * y),
}
for _name, _fn in _BACKWARD.items():
    register_op(OpDef(_name, 2, _grad_rule, lambda inputs, attrs, ctx, fn=_fn: [fn(*inputs, attrs)],
                      "inputs: the output gradient, then the forward value the rule reads"))
register_op(OpDef("neg", 1, same_type_unary, lambda inputs, attrs, ctx: [-inputs[0]]))


def _softmax_bwd_reference(inputs, attrs, ctx):
    dy, y = inputs
    axis = attrs.get("axis", -1)
    return [y * (dy - (dy * y).sum(axis, keepdim=True))]


def _log_softmax_bwd_reference(inputs, attrs, ctx):
    dy, y = inputs
    axis = attrs.get("axis", -1)
    return [dy - torch.exp(y) * dy.sum(axis, keepdim=True)]


register_op(OpDef("softmax_bwd", 2, _grad_rule, _softmax_bwd_reference, "inputs dy, softmax output; attrs axis"))
register_op(OpDef("log_softmax_bwd", 2, _grad_rule, _log_softmax_bwd_reference,
                  "inputs dy, log_softmax output; attrs axis"))


def _activation_vjp(grad_op: str, reads_output: bool):
    def vjp(b, node, grads, needs):
        saved = node.outputs[0] if reads_output else node.inputs[0]
        return [b.op(grad_op, [grads[0], saved], **dict(node.attrs))]

    return vjp


set_vjp("relu", _activation_vjp("relu_bwd", True))
set_vjp("leaky_relu", _activation_vjp("leaky_relu_bwd", False))
set_vjp("sigmoid", _activation_vjp("sigmoid_bwd", True))
set_vjp("tanh", _activation_vjp("tanh_bwd", True))
set_vjp("softmax", _activation_vjp("softmax_bwd", True))
set_vjp("log_softmax", _activation_vjp("log_softmax_bwd", True))
set_vjp("add", lambda b, node, grads, needs: [grads[0] if needs[0] else None, grads[0] if needs[1] else None])
set_vjp("sub", lambda b, node, grads, needs: [grads[0] if needs[0] else None,
                                              b.op("neg", [grads[0]]) if needs[1] else None])
set_vjp("mul", lambda b, node, grads, needs: [b.op("mul", [grads[0], node.inputs[1]]) if needs[0] else None,
                                              b.op("mul", [grads[0], node.inputs[0]]) if needs[1] else None])

set_traits(("relu", "leaky_relu", "sigmoid", "tanh", "add", "sub", "mul", "neg", "relu_bwd", "leaky_relu_bwd",
            "sigmoid_bwd", "tanh_bwd"), "elementwise")
set_traits(("relu", "leaky_relu", "sigmoid", "tanh"), "prologue")
set_traits(("softmax", "log_softmax"), "softmax")
