"""Run a float32 graph in half precision (mixed precision): activations and weights stored in
bfloat16 or float16, while every kernel accumulates its dots and reductions in float32.

Every float32 graph input and parameter becomes `dtype`, and each node's outputs are re-derived
from its op's shape rule, so the half type flows through the graph (scan bodies included) without a
cast node. What stays float32 is what the ops themselves keep in float32: a loss's value, a batch
norm's statistics and the running statistics they update (parameters marked `state`), and a float
target read only by losses (its loss computes in float32). With `loss_scale`, each loss also reads
the float32 scalar parameter LOSS_SCALE and multiplies the gradient it stores by it (float16's
dynamic loss scaling: the runtime owns the value and unscales in the optimizer).

Assumes: a verified float32 graph (source, training or evaluation), before the pipeline's other
passes. Guarantees: a verified graph with the same nodes, names, inputs and outputs, whose float32
values are `dtype` but for those above; with `loss_scale`, the LOSS_SCALE parameter first."""

from __future__ import annotations

from ..ir import Graph, GraphError, Node, TensorType, Value, verify
from ..ir.ops import OPS, has_trait

HALF_DTYPES = ("bfloat16", "float16")
LOSS_SCALE = "fusegraph.loss_scale"  # no layer's parameter has this name: they are "<layer>.<weight>"


def half_precision(graph: Graph, dtype: str, loss_scale: bool = False) -> Graph:
    if dtype not in HALF_DTYPES:
        raise GraphError(f"half precision runs in one of {', '.join(HALF_DTYPES)}, got {dtype!r}")
    mixed = [v for n in graph.nodes if n.op in ("input", "parameter") for v in n.outputs
             if v.type.is_float and v.type.dtype != "float32"]
    if mixed:
        raise GraphError(f"mixed precision starts from a float32 model, but %{mixed[0].name} is "
                         f"{mixed[0].type.dtype}; build the model with dtype='float32'")
    keep = _float32_targets(graph)
    scale = Value(LOSS_SCALE, TensorType((), "float32"))
    nodes = [Node("parameter", (), (scale,), {"type": scale.type, "init": "ones", "trainable": False,
                                              "state": True})] if loss_scale else []
    retyped = _retype(graph, dtype, keep, scale if loss_scale else None, nodes)
    return verify(retyped)


def _float32_targets(graph: Graph) -> set[str]:
    """Graph inputs read only as a loss's target: losses read them in float32."""
    users = graph.users()
    return {v.name for v in graph.inputs
            if users.get(v.name) and all(has_trait(u, "loss") and u.inputs[1].name == v.name for u in users[v.name])}


def _retype(graph: Graph, dtype: str, keep: set[str], scale: Value | None, nodes: list[Node]) -> Graph:
    values: dict[str, Value] = {}

    def half(value: Value) -> Value:
        if value.type.dtype != "float32" or value.name in keep:
            return value
        return Value(value.name, TensorType(value.type.shape, dtype, value.type.layout))

    for node in graph.nodes:
        if node.op in ("input", "parameter"):
            (value,) = node.outputs
            new = value if node.attrs.get("state") else half(value)
            node = node.replace(outputs=(new,), attrs={**node.attrs, "type": new.type})
        else:
            inputs = tuple(values[v.name] for v in node.inputs)
            if scale is not None and has_trait(node, "loss"):
                inputs = (*inputs[:2], scale)
            attrs = dict(node.attrs)
            if "body" in attrs:  # a scan: its step runs in the same precision
                attrs["body"] = _retype(attrs["body"], dtype, set(), None, [])
            try:
                types = OPS[node.op].infer([v.type for v in inputs], attrs)
            except GraphError as error:
                raise GraphError(f"{node.where}: in {dtype}: {error}") from None
            outputs = tuple(Value(v.name, TensorType(t.shape, t.dtype, v.type.layout))
                            for v, t in zip(node.outputs, types, strict=True))
            node = node.replace(inputs=inputs, outputs=outputs, attrs=attrs)
        values.update((v.name, v) for v in node.outputs)
        nodes.append(node)
    return Graph(tuple(nodes), tuple(values[v.name] for v in graph.outputs), graph.name)
