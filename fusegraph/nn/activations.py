"""Activation names the DSL accepts, and what each one lowers to."""

from __future__ import annotations

from difflib import get_close_matches

from torch import nn

from ..ir import GraphError
from ..ir.ops.pointwise import LEAKY_SLOPE

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "linear")


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
    if activation == "leaky_relu":
        return "leaky_relu", {"negative_slope": LEAKY_SLOPE}
    if activation in ("softmax", "log_softmax"):
        return activation, {"axis": -1}
    return activation, {}


def activation_module(activation: str | None) -> nn.Module:
    return {
        None: nn.Identity, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
        "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE), "softmax": lambda: nn.Softmax(dim=-1),
        "log_softmax": lambda: nn.LogSoftmax(dim=-1),
    }[activation]()


def weight_init(activation: str | None) -> str:
    """He for ReLU-family layers, Glorot otherwise."""
    return "he_normal" if activation in ("relu", "leaky_relu") else "glorot_uniform"
