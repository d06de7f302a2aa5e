"""A kernel's worth of IR: an anchor (or none, for elementwise chains), the nodes after it, and the
values it reads and stores. A plain node is a group of one; a `fused` node unpacks its body."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Node, Value

ANCHORS = ("conv1d", "conv2d", "matmul")


@dataclass(frozen=True)
class Group:
    anchor: Node | None
    nodes: tuple[Node, ...]  # after the anchor (or the whole chain when there is no anchor)
    inputs: tuple[Value, ...]  # kernel arguments in{i}_ptr, in order
    outputs: tuple[Value, ...]  # kernel arguments out{j}_ptr, in order (no duplicates)

    def input_index(self, value: Value) -> int:
        return next(i for i, v in enumerate(self.inputs) if v.name == value.name)

    @property
    def channel_vectors(self) -> set[str]:
        """Inputs read per channel (bias vectors) rather than element by element."""
        return {n.inputs[1].name for n in self.nodes if n.op == "bias_add"}


def group_of(node: Node) -> Group:
    if node.op == "fused":
        body = node.attrs["body"]
        compute = body.compute_nodes
        outputs = tuple(dict.fromkeys(body.outputs))
        if node.attrs["anchor"] in ANCHORS:
            return Group(compute[0], tuple(compute[1:]), tuple(body.inputs), outputs)
        return Group(None, tuple(compute), tuple(body.inputs), outputs)
    if node.op in ANCHORS:
        return Group(node, (), node.inputs, node.outputs)
    return Group(None, (node,), node.inputs, node.outputs)
