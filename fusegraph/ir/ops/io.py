"""Graph arguments: `input` (an activation fed by the caller) and `parameter` (a weight)."""

from ..errors import GraphError
from .base import OpDef, register_op

INITIALISERS = ("he_normal", "glorot_uniform", "zeros", "ones", "constant", "uniform", "normal")  # constant: attr value


def _argument_rule(types, attrs):
    t = attrs.get("type")
    if t is None:
        raise GraphError("graph arguments need a 'type' attr")
    return [t]


def _parameter_rule(types, attrs):
    if attrs.get("init") not in INITIALISERS:
        raise GraphError(f"unknown initialiser {attrs.get('init')!r}; use one of {', '.join(INITIALISERS)}")
    return _argument_rule(types, attrs)


def _no_reference(inputs, attrs, ctx):
    raise RuntimeError("graph arguments are bound by the interpreter, not evaluated")


register_op(OpDef("input", 0, _argument_rule, _no_reference, "an activation fed by the caller"))
register_op(OpDef("parameter", 0, _parameter_rule, _no_reference, "a weight, with its initialiser"))
