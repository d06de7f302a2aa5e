"""Store the convolutional part of a graph channels-last (NHWC): a conv's K loop then reads each
tap's channels as one contiguous vector, of the activations and of the weights.

Ops say how they address rank-4 values (ir/ops traits): `layout_free` ones (the convs and their
gradients, the bias gradient, global pooling) address each operand through its own layout, so they
are where layouts change; `layout_follows` ones (elementwise ops, pools and their gradients,
dropout) index all their rank-4 operands as one, so those share a layout; any other op reads
contiguous tensors. Values a `layout_follows` op joins form a class; a class is stored
channels-last unless a member must be contiguous: a graph input (callers pass contiguous tensors),
a graph output (callers get one back), or an operand of an op of neither kind (a reshape, a
matmul, a scan). No copy is ever inserted: the first conv reads the contiguous input and writes
channels-last, the last writes what the flatten after it reads. With `edges="channels_last"`
(callers that keep their tensors channels-last, as a PyTorch model converted to it does), graph
inputs and outputs are stored as their class is, like every other value.

Two ties keep training consistent: a parameter's gradient takes the parameter's layout (the
optimizer walks both as one flat buffer), and a backward dropout takes its forward's (the mask is
a function of the element's index in storage).

Assumes: a verified, unfused graph (runs before fuse; scan bodies have no rank-4 values).
Guarantees: the same graph with layouts set on rank-4 values; every use agrees with its definition;
`layout_follows` nodes have one layout; other nodes (but `layout_free` ones and parameters) touch
only contiguous values; with contiguous edges, graph inputs and outputs other than parameter
gradients are contiguous."""

from __future__ import annotations

from ..ir import Graph, Node, Value, verify
from ..ir.ops import has_trait

EDGES = ("contiguous", "channels_last")


def channels_last(graph: Graph, edges: str = "contiguous") -> Graph:
    if edges not in EDGES:
        raise ValueError(f"edges must be one of {EDGES}, got {edges!r}")
    classes = _Classes()
    contiguous: set[str] = set()
    by_name = {n.name: n for n in graph.nodes}
    gradients = _parameter_gradients(graph, by_name)
    for node in graph.nodes:
        values = [v.name for v in (*node.inputs, *node.outputs) if v.type.rank == 4]
        if _follows(node):
            classes.join(values)
        elif node.op == "input" and edges == "channels_last":
            pass
        elif not (has_trait(node, "layout_free") or node.op == "parameter"):
            contiguous.update(values)
        forward = by_name.get(node.role.gradient_of or "")
        if forward is not None and has_trait(node, "random") and values:
            classes.join([values[0], forward.outputs[0].name])  # the same mask, so the same index order
    for gradient, parameter in gradients.items():
        classes.join([gradient, parameter])
    if edges == "contiguous":
        contiguous.update(v.name for v in graph.outputs if v.type.rank == 4 and v.name not in gradients)
    pinned = {classes.find(name) for name in contiguous}

    def stored(value: Value) -> Value:
        if value.type.rank != 4 or classes.find(value.name) in pinned:
            return value
        return Value(value.name, value.type.with_layout("channels_last"))

    nodes = [node.replace(inputs=tuple(map(stored, node.inputs)), outputs=tuple(map(stored, node.outputs)))
             for node in graph.nodes]
    return verify(Graph(tuple(nodes), tuple(map(stored, graph.outputs)), graph.name))


def _follows(node: Node) -> bool:
    return has_trait(node, "layout_follows") or has_trait(node, "elementwise")


def _parameter_gradients(graph: Graph, by_name: dict[str, Node]) -> dict[str, str]:
    """Each conv weight gradient (summed into the parameter's gradient, or it), with its weight parameter."""
    producers = graph.producers()
    found = {}
    for node in graph.nodes:
        value = node.outputs[0]
        if not has_trait(node, "conv_weight_gradient") or value.type.rank != 4:
            continue
        forward = by_name.get(node.role.gradient_of or "")
        weight = forward.inputs[1] if forward is not None and len(forward.inputs) > 1 else None
        if weight is not None and weight.name in producers and producers[weight.name].op == "parameter":
            found[value.name] = weight.name
    return found


class _Classes:
    """Union-find over value names."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def join(self, names: list[str]) -> None:
        for other in names[1:]:
            self.parent[self.find(other)] = self.find(names[0])
