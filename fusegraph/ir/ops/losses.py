"""Losses as single ops producing the mean loss and its gradient together (PyTorch's mean reduction).

cross_entropy takes logits and integer class targets (with `label_smoothing`, torch's: each target's
probability 1 - label_smoothing, the rest spread evenly over all classes); a model ending in softmax or
log_softmax is trained through the logits feeding it, so no log of a probability is ever taken. binary_cross_entropy
takes logits too (a sigmoid output's input); mse takes the prediction itself.

The loss is computed, and its value kept, in float32 whatever the prediction's dtype (as torch's
autocast does); a float target keeps its own dtype. An optional third input, a float32 scalar,
multiplies the gradient before it is stored (mixed-precision training's loss scale: small gradients
survive float16)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GraphError, InputError
from ..types import TensorType
from .base import OpDef, register_op, require_float, set_execution, set_traits, shape_str, widened

SCALAR = ()


def _scale_rule(types) -> None:
    if len(types) not in (2, 3):
        raise GraphError(f"a loss takes (prediction, target) and optionally a gradient scale, got {len(types)} inputs")
    if len(types) == 3 and types[2] != TensorType(SCALAR, "float32"):
        raise GraphError(f"a loss's gradient scale must be a float32 scalar, got {types[2]}")


def _scaled(grad: torch.Tensor, inputs) -> torch.Tensor:
    return grad * inputs[2] if len(inputs) == 3 else grad


def _cross_entropy_rule(types, attrs):
    _scale_rule(types)
    logits, target = types[:2]
    require_float(logits, "logits")
    if logits.rank != 2:
        raise GraphError(f"cross_entropy takes (batch, classes) logits, got {shape_str(logits)}")
    if target.dtype != "int64" or target.shape != logits.shape[:1]:
        raise GraphError(f"cross_entropy targets must be int64 class ids of shape (batch,), got {target}")
    smoothing = attrs.get("label_smoothing", 0.0)
    if not isinstance(smoothing, float) or not 0.0 <= smoothing <= 1.0:
        raise GraphError(f"cross_entropy's label_smoothing must be a float from 0 to 1, got {smoothing!r}")
    return [TensorType(SCALAR, "float32"), logits]


def _cross_entropy_reference(inputs, attrs, ctx):
    logits, target = inputs[:2]
    classes = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise InputError(f"class targets must lie in [0, {classes}), got [{int(target.min())}, {int(target.max())}]")
    wide = widened(logits)
    smoothing = attrs.get("label_smoothing", 0.0)
    loss = F.cross_entropy(wide, target, label_smoothing=smoothing)
    # the target each row is pulled to: 1 - smoothing on its class, smoothing spread evenly over all
    pulled = (1 - smoothing) * F.one_hot(target, classes).to(wide.dtype) + smoothing / classes
    grad = (torch.softmax(wide, 1) - pulled) / logits.shape[0]
    return [loss, _scaled(grad, inputs).to(logits.dtype)]


def _same_shape_rule(types, attrs):
    _scale_rule(types)
    pred, target = types[:2]
    require_float(pred, "prediction")
    if target.shape != pred.shape or not target.is_float:
        raise GraphError(f"targets must be floats shaped like the prediction {pred}, got {target}")
    return [TensorType(SCALAR, "float32"), pred]


def _bce_reference(inputs, attrs, ctx):
    logits, target = (widened(t) for t in inputs[:2])
    loss = F.binary_cross_entropy_with_logits(logits, target)
    return [loss, _scaled((torch.sigmoid(logits) - target) / logits.numel(), inputs).to(inputs[0].dtype)]


def _mse_reference(inputs, attrs, ctx):
    pred, target = (widened(t) for t in inputs[:2])
    return [F.mse_loss(pred, target), _scaled(2.0 * (pred - target) / pred.numel(), inputs).to(inputs[0].dtype)]


register_op(OpDef("cross_entropy", None, _cross_entropy_rule, _cross_entropy_reference,
                  "mean cross-entropy of logits against class ids [, gradient scale]; outputs loss, d loss / d logits"))
register_op(OpDef("binary_cross_entropy", None, _same_shape_rule, _bce_reference,
                  "mean binary cross-entropy of logits against 0/1 targets [, gradient scale]; outputs loss, gradient"))
register_op(OpDef("mse", None, _same_shape_rule, _mse_reference, "mean squared error [, gradient scale]; outputs loss, gradient"))
set_traits(("cross_entropy", "binary_cross_entropy", "mse"), "loss")
set_execution("cross_entropy", index_inputs=lambda node: [(1, node.inputs[0].type.shape[1], "class targets")])
# the output op a loss takes in (computing from its input, the logits): a probability's log is never taken
ABSORBS = {"cross_entropy": frozenset({"softmax", "log_softmax"}), "binary_cross_entropy": frozenset({"sigmoid"})}
