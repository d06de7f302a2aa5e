"""Run a float32 graph in half precision (mixed precision) by torch.autocast's rules: the ops autocast
runs in half (trait `autocast_half`: convs, matmuls and their gradients, recurrent cells) read and
write bfloat16 or float16, every other op keeps its inputs' dtype, and every kernel accumulates its
dots and reductions in float32.

A graph input or parameter read only by `autocast_half` ops becomes `dtype` (cast once, on the way
in); one that any other op reads stays float32, as autocast leaves it (a batch norm normalising raw
features before the first conv runs in float32, so inputs beyond float16's range do not overflow).
Where a float32 value meets an `autocast_half` op, a `cast` node makes its half copy; where an op
mixes half and float32 operands, the half ones are cast to float32 (autocast's promotion). What the
ops themselves keep in float32 stays so: a loss's value, a batch norm's statistics and the running
statistics they update (parameters marked `state`), and a float target read only by losses. Each
graph output keeps the dtype the runtime reads it in (half, but for those): a `cast` at the end where
needed. With `loss_scale`, each loss also reads the float32 scalar parameter LOSS_SCALE and multiplies
the gradient it stores by it (float16's dynamic loss scaling: the runtime owns the value and unscales
in the optimizer).

Assumes: a verified float32 graph (source, training or evaluation), before the pipeline's other
passes. Guarantees: a verified graph with the same inputs and outputs (names, shapes; dtypes as
above) and the same nodes, plus the `cast` nodes named `<value>.<dtype>`; with `loss_scale`, the
LOSS_SCALE parameter first."""

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


def _statistics(graph: Graph) -> set[str]:
    """Values an op makes float32 by its own rule whatever its inputs: a training batch norm's statistics."""
    return {v.name for n in graph.nodes if n.op == "batch_norm_train" for v in n.outputs[1:]}


def _retype(graph: Graph, dtype: str, keep: set[str], scale: Value | None, nodes: list[Node]) -> Graph:
    reference = _half_everywhere(graph, dtype, keep)  # the dtypes the runtime reads outputs and parameters in
    wanted = _parameter_dtypes(graph, dtype, keep)
    users = graph.users()
    values: dict[str, Value] = {}
    casts: dict[tuple[str, str], Value] = {}

    def retyped(value: Value, to: str) -> Value:
        return Value(value.name, TensorType(value.type.shape, to, value.type.layout))

    def cast(value: Value, to: str) -> Value:
        """`value` in dtype `to`: itself, or a cast node's output (one per value and dtype)."""
        if not value.type.is_float or value.type.dtype == to:
            return value
        if (value.name, to) not in casts:
            out = Value(f"{value.name}.{to}", TensorType(value.type.shape, to, value.type.layout))
            nodes.append(Node("cast", (value,), (out,), {"dtype": to}))
            casts[value.name, to] = out
        return casts[value.name, to]

    params = {n.outputs[0].name for n in graph.nodes if n.op == "parameter"}
    state = {n.outputs[0].name for n in graph.nodes if n.op == "parameter" and n.attrs.get("state")}
    fixed = keep | _statistics(graph)
    for node in graph.nodes:
        if node.op in ("input", "parameter"):
            (value,) = node.outputs
            if node.op == "parameter":
                new = retyped(value, wanted[value.name]) if value.name in wanted else value
            else:  # NOTE: read only in half: cast once on the way in, by the runtime
                new = retyped(value, _input_dtype(value, users, dtype, keep))
            node = node.replace(outputs=(new,), attrs={**node.attrs, "type": new.type})
        else:
            inputs = [values[v.name] for v in node.inputs]
            to = _compute_dtype(node, inputs, params, dtype, fixed)
            if to is not None:
                # NOTE: an op autocast runs in half reads every float operand in half; any other reads its
                # weights in the dtype it computes in and, computing in float32, its half activations in
                # float32 (autocast's promotion); what an op keeps in float32 by its own rule stays so
                inputs = [cast(v, to) if v.type.is_float and v.name not in fixed and v.name not in state and (
                    has_trait(node, "autocast_half") or v.name in params or to == "float32") else v
                    for v in inputs]
            if scale is not None and has_trait(node, "loss"):
                inputs = [*inputs[:2], scale]
            attrs = dict(node.attrs)
            if "body" in attrs:  # a scan: its step runs in half throughout
                attrs["body"] = _half_everywhere(attrs["body"], dtype, set())
            node = _rederived(node, inputs, attrs, dtype)
        values.update((v.name, v) for v in node.outputs)
        nodes.append(node)
    outputs = tuple(cast(values[v.name], r.type.dtype) for v, r in zip(graph.outputs, reference.outputs, strict=True))
    return Graph(tuple(nodes), outputs, graph.name)


def _input_dtype(value: Value, users: dict, dtype: str, keep: set[str]) -> str:
    """A graph input's dtype: half where only ops autocast runs in half read it (or nothing does)."""
    readers = users.get(value.name, [])
    if value.type.is_float and value.name not in keep and all(has_trait(u, "autocast_half") for u in readers):
        return dtype
    return value.type.dtype


def _rederived(node: Node, inputs, attrs: dict, dtype: str) -> Node:
    """`node` reading `inputs`, its outputs' types re-derived from its op's shape rule."""
    try:
        types = OPS[node.op].infer([v.type for v in inputs], attrs)
    except GraphError as error:
        raise GraphError(f"{node.where}: in {dtype}: {error}") from None
    outputs = tuple(Value(v.name, TensorType(t.shape, t.dtype, v.type.layout)) for v, t in zip(node.outputs, types, strict=True))
    return node.replace(inputs=tuple(inputs), outputs=outputs, attrs=attrs)


def _compute_dtype(node: Node, inputs: list[Value], params: set[str], dtype: str, fixed: set[str]) -> str | None:
    """The float dtype `node` computes in, by autocast's rules (None: leave its operands as they are): half
    for the ops autocast runs in half; for any other, float32 if an activation it reads is float32 (type
    promotion: a batch norm on raw inputs, its gradient), else half."""
    if has_trait(node, "autocast_half"):
        return dtype
    if has_trait(node, "loss"):
        return None
    activations = [v.type.dtype for v in inputs if v.type.is_float and v.name not in params and v.name not in fixed]
    if not activations:
        return dtype if any(v.type.is_float and v.name in params for v in inputs) else None
    return "float32" if "float32" in activations else activations[0]


def _parameter_dtypes(graph: Graph, dtype: str, keep: set[str]) -> dict[str, str]:
    """Each float32 trainable parameter's dtype: half if an op reads it in half (or reads it at all with no
    float32 activation beside it), float32 if every reader computes in float32 (a batch norm on raw inputs)."""
    params = {n.outputs[0].name for n in graph.nodes if n.op == "parameter" and not n.attrs.get("state")
              and n.outputs[0].type.dtype == "float32"}
    users = graph.users()
    fixed = keep | _statistics(graph)
    weights = {n.outputs[0].name for n in graph.nodes if n.op == "parameter"}  # state included: not activations
    activation: dict[str, str] = {}  # a dry run of the activations' dtypes
    for node in graph.nodes:
        if node.op == "input":
            (value,) = node.outputs
            activation[value.name] = _input_dtype(value, users, dtype, keep)
        elif node.op != "parameter":
            seen = [Value(v.name, TensorType(v.type.shape, activation.get(v.name, v.type.dtype), v.type.layout))
                    for v in node.inputs]
            to = _compute_dtype(node, seen, weights, dtype, fixed)
            for v in node.outputs:
                activation[v.name] = v.type.dtype if not v.type.is_float or to is None else \
                    ("float32" if v.type.dtype == "float32" and has_trait(node, "loss") else to)
            if node.op == "batch_norm_train":  # NOTE: its statistics are float32 whatever x is
                for v in node.outputs[1:]:
                    activation[v.name] = "float32"
            for v in node.inputs:
                if v.name in params:
                    activation.setdefault(f"param:{v.name}", "float32")
                    if to != "float32":
                        activation[f"param:{v.name}"] = dtype
    return {name: activation.get(f"param:{name}", dtype) for name in params}


def _half_everywhere(graph: Graph, dtype: str, keep: set[str]) -> Graph:
    """Every float32 input and parameter (but state and `keep`) half, each node's outputs re-derived: the
    dtypes the runtime reads a graph's outputs in, and how a recurrent step's body runs."""
    values: dict[str, Value] = {}
    nodes = []

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
            attrs = dict(node.attrs)
            if "body" in attrs:
                attrs["body"] = _half_everywhere(attrs["body"], dtype, set())
            node = _rederived(node, inputs, attrs, dtype)
        values.update((v.name, v) for v in node.outputs)
        nodes.append(node)
    return Graph(tuple(nodes), tuple(values[v.name] for v in graph.outputs), graph.name)
