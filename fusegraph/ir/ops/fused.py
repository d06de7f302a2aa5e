"""fused: one kernel's worth of nodes, kept as a sub-graph. Its shape rule and reference are its body's,
so a fused graph verifies and interprets like the graph it came from.

attrs: body (the sub-graph: its inputs are the fused node's inputs, in order), anchor (the op whose
template hosts the group, or 'pointwise'), kernel (the generated kernel's name)."""

from __future__ import annotations

from ..errors import GraphError
from .base import OpDef, register_op


def _fused_rule(types, attrs):
    body = attrs["body"]
    expected = [v.type for v in body.inputs]
    if list(types) != expected:
        raise GraphError(f"fused node takes {[str(t) for t in expected]} but is given {[str(t) for t in types]}")
    return [v.type for v in body.outputs]


def _fused_reference(inputs, attrs, ctx):
    return ctx.run_graph(attrs["body"], list(inputs))


register_op(OpDef("fused", None, _fused_rule, _fused_reference, "attrs body, anchor, kernel"))
