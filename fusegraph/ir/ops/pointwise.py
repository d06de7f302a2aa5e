"""Elementwise ops: activations and same-shape binary arithmetic (no implicit broadcasting).

An activation is one `activation(...)` call: its torch reference, its formula, its gradient's formula,
its torch.nn module and its traits. Named as PyTorch names it, it is found there too (`torch_forms`):
fg.from_torch and torch.compile convert nn.<Module>, F.<name>, torch.<name>, aten.<name> and
Tensor.<name> to it, and a layer names it by the same string (nn/activations.py lists them)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GraphError
from ..types import FLOAT_DTYPES, TensorType
from .base import (
    OpDef,
    TorchForms,
    register_op,
    require_float,
    require_same_dtype,
    same_type_unary,
    set_traits,
    set_vjp,
    shape_str,
)
from .expr import INV_SQRT_2PI, SQRT1_2, Arg, Attr, erf, evaluate, exp, log1p, sigmoid, tanh, where

LEAKY_SLOPE = 0.01  # leaky_relu's negative_slope when a node does not set one: PyTorch's default
ELU_ALPHA = 1.0  # elu's alpha when a node does not set one: PyTorch's default
SOFTPLUS_BETA, SOFTPLUS_THRESHOLD = 1.0, 20.0  # PyTorch's defaults
HARDTANH_MIN, HARDTANH_MAX = -1.0, 1.0


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


def _grad_rule(types, attrs):
    return _binary_rule(types, attrs)


def activation(name: str, torch_fn, math, grad, reads: str, module, traits: tuple[str, ...] = (),
               defaults: dict | None = None, torch_fixed: dict | None = None) -> None:
    """Declare activation `name` and its gradient op `name_bwd` together.

    torch_fn(x, attrs): the reference; math(x): its formula; grad(dy, saved): the gradient's formula,
    PyTorch's (so ties, saturation and NaN give its numbers), reading the forward's "output" or
    "input" (`reads`); module(attrs): the torch.nn module for to_torch(); defaults: its attrs (named as
    PyTorch names the options); torch_fixed: PyTorch arguments it has no attr for, and the value
    they must keep (gelu's approximate="none")."""
    x, dy, saved = Arg(0), Arg(0), Arg(1)
    defaults = defaults or {}
    forms = torch_forms(name, type(module(defaults)), torch_fixed or {})
    register_op(OpDef(name, 1, same_type_unary, lambda inputs, attrs, ctx: [torch_fn(inputs[0], attrs)],
                      math=math(x), module=module, defaults=defaults, torch=forms))
    register_op(OpDef(f"{name}_bwd", 2, _grad_rule, _evaluated(grad(dy, saved)),
                      f"inputs: the output gradient, then the forward {reads}", math=grad(dy, saved)))
    set_vjp(name, _activation_vjp(f"{name}_bwd", reads == "output"))
    set_traits((name,), "elementwise", "prologue", "activation", *traits)
    set_traits((f"{name}_bwd",), "elementwise")


def torch_forms(name: str, module: type, fixed: dict) -> TorchForms:
    """Every PyTorch spelling of op `name`, found by PyTorch's own naming: F.<name>, torch.<name>, the
    ATen overload aten.<name>.default and the method Tensor.<name>, and each's in-place form (<name>_),
    where PyTorch has them."""
    def spelled(name: str) -> tuple[tuple[Callable, ...], tuple[str, ...]]:
        aten = getattr(torch.ops.aten, name, None)
        functions = [getattr(F, name, None), getattr(torch, name, None), getattr(aten, "default", None)]
        return (tuple(dict.fromkeys(f for f in functions if f is not None)),
                (name,) if hasattr(torch.Tensor, name) else ())

    (functions, methods), (in_place_functions, in_place_methods) = spelled(name), spelled(f"{name}_")
    return TorchForms(modules=(module,), functions=functions, methods=methods, fixed=fixed,
                      in_place_functions=in_place_functions, in_place_methods=in_place_methods)


def _evaluated(math):
    """A gradient op's reference: its formula on torch tensors (the forward op's autograd is what tests
    hold it to)."""
    return lambda inputs, attrs, ctx: [evaluate(math, inputs, attrs)]


def _activation_vjp(grad_op: str, reads_output: bool):
    def vjp(b, node, grads, needs):
        saved = node.outputs[0] if reads_output else node.inputs[0]
        return [b.op(grad_op, [grads[0], saved], **dict(node.attrs))]

    return vjp


# NOTE: selections keep NaN where torch does (a max or min would drop it)
activation("relu", lambda x, a: F.relu(x), lambda x: where(x < 0, 0.0, x),
           lambda dy, y: where(y <= 0, 0.0, dy),  # a NaN input passes its gradient, as threshold_backward
           "output", lambda a: nn.ReLU(), ("non_decreasing", "rectifier"))
_slope = Attr("negative_slope", LEAKY_SLOPE)
activation("leaky_relu", lambda x, a: F.leaky_relu(x, a.get("negative_slope", LEAKY_SLOPE)),
           lambda x: where(x >= 0, x, x * _slope), lambda dy, x: where(x > 0, dy, dy * _slope),
           "input", lambda a: nn.LeakyReLU(a.get("negative_slope", LEAKY_SLOPE)), ("non_decreasing", "rectifier"),
           {"negative_slope": LEAKY_SLOPE})
activation("sigmoid", lambda x, a: torch.sigmoid(x), sigmoid, lambda dy, y: dy * (1.0 - y) * y,
           "output", lambda a: nn.Sigmoid())
activation("tanh", lambda x, a: torch.tanh(x), tanh, lambda dy, y: dy * (1.0 - y * y), "output", lambda a: nn.Tanh())


def _gelu_grad(dy, x):
    cdf = 0.5 * (1.0 + erf(x * SQRT1_2))
    return dy * (cdf + x * exp(-0.5 * x * x) * INV_SQRT_2PI)


def _silu_grad(dy, x):
    s = sigmoid(x)
    return dy * s * (1.0 + x * (1.0 - s))


activation("gelu", lambda x, a: F.gelu(x), lambda x: 0.5 * x * (1.0 + erf(x * SQRT1_2)), _gelu_grad,
           "input", lambda a: nn.GELU(), ("rectifier",), torch_fixed={"approximate": "none"})
activation("silu", lambda x, a: F.silu(x), lambda x: x * sigmoid(x), _silu_grad, "input", lambda a: nn.SiLU(),
           ("rectifier",))
_alpha = Attr("alpha", ELU_ALPHA)
activation("elu", lambda x, a: F.elu(x, a.get("alpha", ELU_ALPHA)), lambda x: where(x <= 0, _alpha * (exp(x) - 1.0), x),
           lambda dy, x: where(x <= 0, dy * _alpha * exp(x), dy), "input",
           lambda a: nn.ELU(a.get("alpha", ELU_ALPHA)), ("rectifier",), {"alpha": ELU_ALPHA},
           torch_fixed={"scale": 1.0, "input_scale": 1.0})  # aten.elu's: SELU's constants

_beta, _threshold = Attr("beta", SOFTPLUS_BETA), Attr("threshold", SOFTPLUS_THRESHOLD)


def _softplus(x):
    # NOTE: as PyTorch: linear above the threshold (where exp would overflow), log1p(exp(beta x)) / beta below
    z = x * _beta
    return where(z > _threshold, x, log1p(exp(z)) / _beta)


def _mish_grad(dy, x):
    t = tanh(log1p(exp(x)))
    return dy * (t + x * sigmoid(x) * (1.0 - t * t))


activation("softplus", lambda x, a: F.softplus(x, a.get("beta", SOFTPLUS_BETA), a.get("threshold", SOFTPLUS_THRESHOLD)),
           _softplus, lambda dy, x: where(x * _beta > _threshold, dy, dy * sigmoid(x * _beta)), "input",
           lambda a: nn.Softplus(a.get("beta", SOFTPLUS_BETA), a.get("threshold", SOFTPLUS_THRESHOLD)), ("rectifier",),
           {"beta": SOFTPLUS_BETA, "threshold": SOFTPLUS_THRESHOLD})
activation("mish", lambda x, a: F.mish(x), lambda x: x * tanh(where(x > SOFTPLUS_THRESHOLD, x, log1p(exp(x)))),
           _mish_grad, "input", lambda a: nn.Mish(), ("rectifier",))
_min, _max = Attr("min_val", HARDTANH_MIN), Attr("max_val", HARDTANH_MAX)
# NOTE: as torch's clamps: a NaN passes through, and so does its gradient (torch's CUDA and scalar CPU paths;
# its vectorized CPU path gives a NaN input none)
activation("hardtanh", lambda x, a: F.hardtanh(x, a.get("min_val", HARDTANH_MIN), a.get("max_val", HARDTANH_MAX)),
           lambda x: where(x < _min, _min, where(x > _max, _max, x)),
           lambda dy, x: where((x <= _min) | (x >= _max), 0.0, dy), "input",
           lambda a: nn.Hardtanh(a.get("min_val", HARDTANH_MIN), a.get("max_val", HARDTANH_MAX)), ("non_decreasing",),
           {"min_val": HARDTANH_MIN, "max_val": HARDTANH_MAX})
activation("relu6", lambda x, a: F.relu6(x), lambda x: where(x < 0.0, 0.0, where(x > 6.0, 6.0, x)),
           lambda dy, x: where((x <= 0.0) | (x >= 6.0), 0.0, dy), "input", lambda a: nn.ReLU6(),
           ("non_decreasing", "rectifier"))
def _relu6_of_x_plus_3(x):
    """min(max(x + 3, 0), 6), as torch's hardsigmoid and hardswish compute it (a NaN passes through)."""
    shifted = x + 3.0
    return where(shifted < 0.0, 0.0, where(shifted > 6.0, 6.0, shifted))


activation("hardsigmoid", lambda x, a: F.hardsigmoid(x), lambda x: _relu6_of_x_plus_3(x) / 6.0,
           lambda dy, x: where((x > -3.0) & (x < 3.0), dy / 6.0, 0.0), "input", lambda a: nn.Hardsigmoid(),
           ("non_decreasing",))
activation("hardswish", lambda x, a: F.hardswish(x), lambda x: x * _relu6_of_x_plus_3(x) / 6.0,
           lambda dy, x: where(x <= -3.0, 0.0, where(x < 3.0, dy * (x / 3.0 + 0.5), dy)), "input",
           lambda a: nn.Hardswish(), ("rectifier",))

for _name, _fn, _math in (("add", torch.add, Arg(0) + Arg(1)), ("sub", torch.sub, Arg(0) - Arg(1)),
                          ("mul", torch.mul, Arg(0) * Arg(1))):
    register_op(OpDef(_name, 2, _binary_rule, lambda inputs, attrs, ctx, fn=_fn: [fn(*inputs)], math=_math))


def _softmax_rule(types, attrs):
    (x,) = types
    require_float(x)
    if not -x.rank <= attrs.get("axis", -1) < x.rank:
        raise GraphError(f"softmax axis {attrs.get('axis')} is out of range for {shape_str(x)}")
    return [x]


register_op(OpDef("softmax", 1, _softmax_rule,
                  lambda inputs, attrs, ctx: [torch.softmax(inputs[0], attrs.get("axis", -1))], "attrs axis",
                  module=lambda a: nn.Softmax(dim=a.get("axis", -1)), defaults={"axis": -1}))
register_op(OpDef("log_softmax", 1, _softmax_rule,
                  lambda inputs, attrs, ctx: [torch.log_softmax(inputs[0], attrs.get("axis", -1))], "attrs axis",
                  module=lambda a: nn.LogSoftmax(dim=a.get("axis", -1)), defaults={"axis": -1}))


# -- backward -----------------------------------------------------------------------------------
register_op(OpDef("neg", 1, same_type_unary, lambda inputs, attrs, ctx: [-inputs[0]], math=-Arg(0)))


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


set_vjp("softmax", _activation_vjp("softmax_bwd", True))
set_vjp("log_softmax", _activation_vjp("log_softmax_bwd", True))
set_vjp("add", lambda b, node, grads, needs: [grads[0] if needs[0] else None, grads[0] if needs[1] else None])
set_vjp("sub", lambda b, node, grads, needs: [grads[0] if needs[0] else None,
                                              b.op("neg", [grads[0]]) if needs[1] else None])
set_vjp("mul", lambda b, node, grads, needs: [b.op("mul", [grads[0], node.inputs[1]]) if needs[0] else None,
                                              b.op("mul", [grads[0], node.inputs[0]]) if needs[1] else None])

set_traits(("add", "sub", "mul", "neg"), "elementwise")
set_traits(("softmax", "log_softmax"), "softmax")


# -- precision ----------------------------------------------------------------------------------
def _cast_rule(types, attrs):
    (x,) = types
    require_float(x)
    if attrs.get("dtype") not in FLOAT_DTYPES:
        raise GraphError(f"cast: dtype must be one of {', '.join(FLOAT_DTYPES)}, got {attrs.get('dtype')!r}")
    return [TensorType(x.shape, attrs["dtype"], x.layout)]


# NOTE: mixed precision's casts (passes/mixed_precision.py): where a float32 value meets an op autocast
# runs in half, or a half value an op that runs in float32. Not a prologue: a conv or matmul reads its
# operand in the dtype it computes in
register_op(OpDef("cast", 1, _cast_rule, lambda inputs, attrs, ctx: [inputs[0].to(getattr(torch, attrs["dtype"]))],
                  "x in another float dtype; attr dtype", math=Arg(0)))
set_vjp("cast", lambda b, node, grads, needs: [b.op("cast", [grads[0]], dtype=node.inputs[0].type.dtype)])
set_traits(("cast",), "elementwise")
