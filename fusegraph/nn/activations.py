"""Activation names the DSL accepts. Each is an op's name: the op (ir/ops/pointwise.py) says what it
computes, the attrs a layer gives it, its torch.nn module and whether it is ReLU-like; every op
declared by activation() is one, beside the softmaxes and "linear" (none)."""

from __future__ import annotations

from difflib import get_close_matches

from torch import nn

from ..ir import GraphError
from ..ir.ops import OPS, get_op

ACTIVATIONS = (*(name for name, op in OPS.items() if "activation" in op.traits), "softmax", "log_softmax", "linear")


def check_activation(activation: str | None, where: str) -> str | None:
    """None for no activation ('linear' too); otherwise the validated name."""
    if activation is None or activation == "linear":
        return None
    if not isinstance(activation, str):
        raise GraphError(f"{where}: activation must be a name such as 'relu' or None, got {activation!r}")
    if activation not in ACTIVATIONS:
        near = get_close_matches(str(activation), ACTIVATIONS, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise GraphError(f"{where}: unknown activation {activation!r}; {hint}use one of {', '.join(ACTIVATIONS)}")
    return activation


def activation_step(activation: str | None) -> tuple[str, dict] | None:
    """(op, attrs) for the IR, or None."""
    if activation is None:
        return None
    return activation, dict(get_op(activation).defaults)


def activation_module(activation: str | None) -> nn.Module:
    if activation is None:
        return nn.Identity()
    op = get_op(activation)
    return op.module(op.defaults)


def weight_init(activation: str | None) -> str:
    """He for ReLU-like layers, Glorot otherwise."""
    return "he_normal" if activation is not None and "rectifier" in get_op(activation).traits else "glorot_uniform"
