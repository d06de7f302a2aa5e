"""Losses as single ops producing the mean loss and its gradient together (PyTorch's mean reduction).

cross_entropy takes logits and integer class targets; a model ending in softmax or log_softmax is
trained through the logits feeding it, so no log of a probability is ever taken. binary_cross_entropy
takes logits too (a sigmoid output's input); mse takes the prediction itself."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GraphError, InputError
from ..types import TensorType
from .base import OpDef, register_op, require_float, set_execution, set_traits, shape_str

SCALAR = ()


def _cross_entropy_rule(types, attrs):
    logits, target = types
    require_float(logits, "logits")
    if logits.rank != 2:
        raise GraphError(f"cross_entropy takes (batch, classes) logits, got {shape_str(logits)}")
    if target.dtype != "int64" or target.shape != logits.shape[:1]:
        raise GraphError(f"cross_entropy targets must be int64 class ids of shape (batch,), got {target}")
    return [TensorType(SCALAR, logits.dtype), logits]


def _cross_entropy_reference(inputs, attrs, ctx):
    logits, target = inputs
    classes = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise InputError(f"class targets must lie in [0, {classes}), got [{int(target.min())}, {int(target.max())}]")
    loss = F.cross_entropy(logits, target)
    grad = (torch.softmax(logits, 1) - F.one_hot(target, classes).to(logits.dtype)) / logits.shape[0]
    return [loss, grad]


def _same_shape_rule(types, attrs):
    pred, target = types
    require_float(pred, "prediction")
    if target != pred:
        raise GraphError(f"targets must match the prediction {pred}, got {target}")
    return [TensorType(SCALAR, pred.dtype), pred]


def _bce_reference(inputs, attrs, ctx):
    logits, target = inputs
    loss = F.binary_cross_entropy_with_logits(logits, target)
    return [loss, (torch.sigmoid(logits) - target) / logits.numel()]


def _mse_reference(inputs, attrs, ctx):
    pred, target = inputs
    return [F.mse_loss(pred, target), 2.0 * (pred - target) / pred.numel()]


register_op(OpDef("cross_entropy", 2, _cross_entropy_rule, _cross_entropy_reference,
                  "mean cross-entropy of logits against class ids; outputs loss, d loss / d logits"))
register_op(OpDef("binary_cross_entropy", 2, _same_shape_rule, _bce_reference,
                  "mean binary cross-entropy of logits against 0/1 targets; outputs loss, gradient"))
register_op(OpDef("mse", 2, _same_shape_rule, _mse_reference, "mean squared error; outputs loss, gradient"))
set_traits(("cross_entropy", "binary_cross_entropy", "mse"), "loss")
set_execution("cross_entropy", index_inputs=lambda node: [(1, node.inputs[0].type.shape[1], "class targets")])
# the output op a loss takes in (computing from its input, the logits): a probability's log is never taken
ABSORBS = {"cross_entropy": frozenset({"softmax", "log_softmax"}), "binary_cross_entropy": frozenset({"sigmoid"})}
