"""Reverse-mode differentiation of a forward graph into a training graph.

Assumes: a verified forward graph with one output (the prediction); `loss` names a loss op.
Guarantees: a verified graph whose inputs are the forward inputs then `target`, and whose outputs
are the mean loss then the gradient of every trainable parameter, in parameter order. Gradients
come from each op's VJP rule (in ir/ops), in terms of other ops; contributions to one value are
summed; only values that depend on a trainable parameter get gradients, so frozen parameters and
the data get no gradient nodes at all. A classifier ending in softmax / log_softmax is trained
through its logits (cross_entropy), a sigmoid output through its input (binary_cross_entropy)."""

from __future__ import annotations

from ..ir import BATCH, Graph, GraphBuilder, GraphError, Node, TensorType, Value, get_op, verify

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")


class _GradBuilder:
    """Emits backward nodes after the forward ones, named after the node being differentiated."""

    def __init__(self, graph: Graph) -> None:
        self.b = GraphBuilder(graph.name)
        self.b.nodes = list(graph.nodes)
        self.b.values = {v.name: v for n in graph.nodes for v in n.outputs}
        self.current: Node | None = None

    def op(self, op: str, inputs, **attrs):
        base = f"d.{self.current.name}" if self.current is not None else "d"
        return self.b.op(op, inputs, name=base, layer=self.current.layer if self.current else None, **attrs)


def _loss_input(graph: Graph, loss: str) -> tuple[Value, Node | None]:
    """The value the loss reads, and the forward node the loss absorbs (softmax / sigmoid), if any."""
    prediction = graph.outputs[0]
    producer = graph.producers().get(prediction.name)
    if loss == "cross_entropy" and producer is not None and producer.op in ("softmax", "log_softmax"):
        return producer.inputs[0], producer
    if loss == "binary_cross_entropy" and producer is not None and producer.op == "sigmoid":
        return producer.inputs[0], producer
    return prediction, None


def _needs_grad(graph: Graph) -> set[str]:
    needs = {n.name for n in graph.param_nodes if n.attrs.get("trainable", True)}
    for node in graph.compute_nodes:
        if any(v.name in needs for v in node.inputs):
            needs |= {v.name for v in node.outputs}
    return needs


def autodiff(graph: Graph, loss: str) -> Graph:
    verify(graph)
    if loss not in LOSSES:
        raise GraphError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    if len(graph.outputs) != 1:
        raise GraphError(f"training needs a model with one output, this one has {len(graph.outputs)}")
    logits, absorbed = _loss_input(graph, loss)
    if loss == "cross_entropy":
        if logits.type.rank != 2:
            raise GraphError(f"cross_entropy needs (batch, classes) outputs, got {logits.type}; use mse or "
                             "binary_cross_entropy for other shapes")
        target_type = TensorType((BATCH,), "int64")
    else:
        target_type = graph.outputs[0].type
    g = _GradBuilder(graph)
    target = g.b.input("target", target_type)
    loss_value, seed = g.b.op(loss, [logits, target], name="loss", output_names=("value", "grad"))
    needs = _needs_grad(graph)
    grads: dict[str, Value] = {logits.name: seed}
    for node in reversed(graph.compute_nodes):
        if node is absorbed:
            continue
        out_grads = [grads.get(v.name) for v in node.outputs]
        wanted = [v.name in needs for v in node.inputs]
        if all(d is None for d in out_grads) or not any(wanted):
            continue
        rule = get_op(node.op).vjp
        if rule is None:
            raise GraphError(f"{node.where}: training through {node.op} is not supported yet"
                             + (" (backpropagation through time for RNN layers is the next step)"
                                if node.op == "scan" else ""))
        g.current = node
        if any(d is None for d in out_grads):
            out_grads = [d if d is not None or node.op == "split" else g.op("zeros", [v])
                         for d, v in zip(out_grads, node.outputs)]
        for value, grad, want in zip(node.inputs, rule(g, node, out_grads, wanted), wanted):
            if want and grad is not None:
                grads[value.name] = g.op("add", [grads[value.name], grad]) if value.name in grads else grad
    g.current = None
    outputs = [loss_value]
    for param in graph.param_nodes:
        if param.attrs.get("trainable", True):
            value = param.outputs[0]
            outputs.append(grads[value.name] if value.name in grads else g.op("zeros", [value]))
    nodes = [n for n in g.b.nodes if n.op != "input"]
    inputs = [n for n in g.b.nodes if n.op == "input"]
    return verify(Graph((*inputs, *nodes), tuple(outputs), f"{graph.name}_train"))


