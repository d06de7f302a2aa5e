"""Batch normalisation over axis 1 (channels), as torch's nn.BatchNorm1d / 2d.

`batch_norm` is the evaluation form: running statistics in, a per-channel affine map out, so it
joins a conv's or a matmul's epilogue. A training graph replaces it (passes/autodiff.py) with
`batch_norm_train`, which computes the batch's statistics, and `running_average` nodes that give the
new running statistics; its VJP is `batch_norm_train_bwd`, the whole gradient through the batch
statistics in one op."""

from __future__ import annotations

import torch

from ..errors import GraphError
from ..types import TensorType
from .base import OpDef, register_op, require_float, set_execution, set_traits, set_vjp, shape_str, widened
from .expr import Arg, Attr, rsqrt

EPS, MOMENTUM = 1e-5, 0.1  # torch's defaults


def _channels(x) -> int:
    if x.rank < 2:
        raise GraphError(f"batch normalisation needs (batch, channels, ...), got {shape_str(x)}")
    require_float(x)
    return x.shape[1]


def _require_vectors(types, channels: int, names: tuple[str, ...]) -> None:
    for t, name in zip(types, names):
        if t.shape != (channels,):
            raise GraphError(f"{name} must have one value per channel ({channels}), got {shape_str(t)}")


def _eval_rule(types, attrs):
    x = types[0]
    _require_vectors(types[1:], _channels(x), ("running_mean", "running_var", "weight", "bias"))
    return [x]


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape([-1 if i == 1 else 1 for i in range(x.dim())])


def _eval_reference(inputs, attrs, ctx):
    x, mean, var, weight, bias = inputs
    return [torch.nn.functional.batch_norm(x, mean, var, weight, bias, training=False, eps=attrs.get("eps", EPS))]


def _eval_vjp(b, node, grads, needs):
    """Running statistics are constants: dx = dy * weight / sqrt(var + eps) is the evaluation form itself
    with a zero mean and bias; the weight and bias gradients are per-channel sums."""
    dy = grads[0]
    x, mean, var, weight, bias = node.inputs
    eps = node.attrs.get("eps", EPS)
    dx = b.op("batch_norm", [dy, b.op("zeros", [mean]), var, weight, b.op("zeros", [bias])], eps=eps,
              axis=node.attrs.get("axis", 1)) if needs[0] else None
    dweight, dbias = b.op("batch_norm_param_grads", [dy, x, mean, var], eps=eps) if needs[3] or needs[4] else (None,) * 2
    return [dx, None, None, dweight, dbias]


def _param_grads_rule(types, attrs):
    dy, x, mean, var = types
    _require_vectors((mean, var), _channels(x), ("running_mean", "running_var"))
    if dy.shape != x.shape:
        raise GraphError(f"the output gradient {shape_str(dy)} is not shaped like the input {shape_str(x)}")
    vector = TensorType((x.shape[1],), dy.dtype)
    return [vector, vector]


def _param_grads_reference(inputs, attrs, ctx):
    dy, x, mean, var = (widened(t) for t in inputs)
    dims = [d for d in range(x.dim()) if d != 1]
    xhat = (x - _per_channel(mean, x)) * _per_channel(torch.rsqrt(var + attrs.get("eps", EPS)), x)
    return [(dy * xhat).sum(dim=dims).to(inputs[0].dtype), dy.sum(dim=dims).to(inputs[0].dtype)]


def _train_rule(types, attrs):
    x = types[0]
    channels = _channels(x)
    _require_vectors(types[1:], channels, ("weight", "bias"))
    stat = TensorType((channels,), "float32")  # statistics accumulate and stay in float32, as torch's do
    return [x, stat, stat, stat]


def _statistics(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.mean(dim=dims)
    biased = x.var(dim=dims, unbiased=False)
    return mean, x.var(dim=dims, unbiased=True), torch.rsqrt(biased + eps)


def _train_reference(inputs, attrs, ctx):
    x, weight, bias = (widened(t) for t in inputs)  # a half-precision batch is normalised in float32
    eps = attrs.get("eps", EPS)
    y = torch.nn.functional.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    mean, unbiased, invstd = _statistics(x, eps)
    return [y.to(inputs[0].dtype), mean, unbiased, invstd]


def _train_vjp(b, node, grads, needs):
    dy = grads[0]
    x, weight, _ = node.inputs
    _, mean, _, invstd = node.outputs
    dx, dweight, dbias = b.op("batch_norm_train_bwd", [dy, x, mean, invstd, weight])
    return [dx, dweight, dbias]


def _bwd_rule(types, attrs):
    dy, x = types[:2]
    _require_vectors(types[2:], _channels(x), ("mean", "invstd", "weight"))
    if dy.shape != x.shape:
        raise GraphError(f"the output gradient {shape_str(dy)} is not shaped like the input {shape_str(x)}")
    return [x, types[4], types[4]]


def _bwd_reference(inputs, attrs, ctx):
    dy, x, mean, invstd, weight = (widened(t) for t in inputs)
    dims = [d for d in range(x.dim()) if d != 1]
    xhat = (x - _per_channel(mean, x)) * _per_channel(invstd, x)
    dbias, dweight = dy.sum(dim=dims), (dy * xhat).sum(dim=dims)
    count = x.numel() // x.shape[1]
    dx = _per_channel(weight * invstd, x) * (dy - _per_channel(dbias / count, x) - xhat * _per_channel(dweight / count, x))
    return [dx.to(inputs[1].dtype), dweight.to(inputs[4].dtype), dbias.to(inputs[4].dtype)]


def _running_rule(types, attrs):
    running, batch = types
    if running.shape != batch.shape or running.rank != 1:
        raise GraphError(f"a running statistic {shape_str(running)} and its batch value {shape_str(batch)} must be "
                         "the same vector")
    return [running]


def _running_reference(inputs, attrs, ctx):
    running, batch = inputs
    momentum = attrs.get("momentum", MOMENTUM)
    return [(1 - momentum) * running + momentum * batch]


register_op(OpDef("batch_norm", 5, _eval_rule, _eval_reference,
                  "(x, running_mean, running_var, weight, bias) -> y; attr eps",
                  math=(Arg(0) - Arg(1)) * rsqrt(Arg(2) + Attr("eps", EPS)) * Arg(3) + Arg(4)))
register_op(OpDef("batch_norm_train", 3, _train_rule, _train_reference,
                  "(x, weight, bias) -> (y, batch mean, unbiased batch variance, 1/sqrt(biased variance + eps))"))
register_op(OpDef("batch_norm_train_bwd", 5, _bwd_rule, _bwd_reference,
                  "(dy, x, mean, invstd, weight) -> (dx, dweight, dbias): through the batch statistics"))
register_op(OpDef("batch_norm_param_grads", 4, _param_grads_rule, _param_grads_reference,
                  "(dy, x, running_mean, running_var) -> (dweight, dbias) of the evaluation form; attr eps"))
register_op(OpDef("running_average", 2, _running_rule, _running_reference,
                  "(running, batch) -> (1 - momentum) * running + momentum * batch; attr momentum",
                  # NOTE: torch's own formula: an infinite batch statistic leaves inf, where
                  # running + (batch - running) * momentum would make inf - inf = NaN the next step
                  math=Arg(0) * (1 - Attr("momentum", MOMENTUM)) + Arg(1) * Attr("momentum", MOMENTUM)))
set_vjp("batch_norm_train", _train_vjp)
set_vjp("batch_norm", _eval_vjp)
# statistics, then the normalisation: two launches each (kernels/norm.py)
set_execution("batch_norm_train", launches=lambda node: 2)
set_execution("batch_norm_train_bwd", launches=lambda node: 2)
set_traits(("batch_norm",), "elementwise", "per_channel")
set_traits(("running_average",), "elementwise")
set_traits(("batch_norm_train", "batch_norm_train_bwd", "batch_norm_param_grads"), "layout_follows")


# -- layer normalisation: over the last axis, as torch's nn.LayerNorm(last dim) ---------------------
LAYER_NORM_EPS = 1e-5


def _layer_norm_rule(types, attrs):
    x, weight, bias = types
    require_float(x)
    features = x.shape[-1]
    for t, name in ((weight, "weight"), (bias, "bias")):
        if t.shape != (features,):
            raise GraphError(f"layer norm {name} must have one value per feature of the last axis ({features}), "
                             f"got {shape_str(t)}")
    return [x]


def _layer_norm_reference(inputs, attrs, ctx):
    x, weight, bias = inputs
    return [torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, attrs.get("eps", LAYER_NORM_EPS))]


def _layer_norm_bwd_reference(inputs, attrs, ctx):
    dy, x, weight = inputs
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = torch.nn.functional.layer_norm(leaf, (x.shape[-1],), weight, None, attrs.get("eps", LAYER_NORM_EPS))
        (dx,) = torch.autograd.grad(y, leaf, dy)
    return [dx]


def _layer_norm_param_grads_reference(inputs, attrs, ctx):
    dy, x = inputs
    xhat = torch.nn.functional.layer_norm(x, (x.shape[-1],), None, None, attrs.get("eps", LAYER_NORM_EPS))
    rows = tuple(range(x.dim() - 1))
    return [(dy * xhat).sum(rows), dy.sum(rows)]


def _layer_norm_vjp(b, node, grads, needs):
    """dx through the row's statistics (recomputed from x, as torch's backward does from its saved ones);
    the weight's and bias' gradients are sums over rows."""
    (dy,) = grads
    x, weight, _ = node.inputs
    eps = node.attrs.get("eps", LAYER_NORM_EPS)
    dx = b.op("layer_norm_bwd", [dy, x, weight], eps=eps) if needs[0] else None
    dweight, dbias = b.op("layer_norm_param_grads", [dy, x], eps=eps) if needs[1] or needs[2] else (None, None)
    return [dx, dweight, dbias]


register_op(OpDef("layer_norm", 3, _layer_norm_rule, _layer_norm_reference,
                  "x normalised over its last axis, then weight * x + bias (torch's layer_norm); attr eps"))
register_op(OpDef("layer_norm_bwd", 3, lambda types, attrs: [types[1]], _layer_norm_bwd_reference,
                  "a layer norm's input gradient; inputs dy, x, weight; attr eps"))
register_op(OpDef("layer_norm_param_grads", 2,
                  lambda types, attrs: [types[1].with_shape((types[1].shape[-1],))] * 2,
                  _layer_norm_param_grads_reference, "a layer norm's weight and bias gradients; inputs dy, x"))
set_vjp("layer_norm", _layer_norm_vjp)
