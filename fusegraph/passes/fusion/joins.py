"""Whether a node may join a group: one rule per kind of node (JOIN_RULES, the first that applies),
each asking the group's Anchor what its template takes in. `refusal` returns why not, or ""."""

from __future__ import annotations

from ...ir import Node
from ...ir.ops import has_trait, ops_with
from ..templates import anchor_of
from ..templates import refusal as template_refusal
from .state import Group, Grouping

ELEMENTWISE = ops_with("elementwise")
POOLING = ("pool", "global_pool")  # ops that reduce the conv tile: only elementwise work on what they make follows


def refusal(grouping: Grouping, group: Group, node: Node) -> str:
    """Why `node` cannot join `group`, or ""."""
    for v in node.inputs:
        if v not in group.made and grouping.depends_on(v, group.members):
            return f"its input %{v.name} is computed from the group outside it (fusing would make a cycle)"
    pooled = next((m for m in group.members if any(has_trait(m, t) for t in POOLING)), None)
    if pooled is not None:
        if node.op not in ELEMENTWISE or node.outputs[0].type != pooled.outputs[0].type:
            return "after a pool, a conv kernel takes only elementwise ops on the pooled map"
        if has_trait(node, "per_channel") and node.attrs["axis"] % node.outputs[0].type.rank != 1:
            return "bias along a non-channel axis"
        return ""
    rule = next((rule for applies, rule in JOIN_RULES if applies(node)), None)
    if rule is None:
        return f"{node.op} has no place in the {group.anchor.template} kernel's epilogue"
    return rule(grouping, group, node)


def elementwise_joins(grouping: Grouping, group: Group, node: Node) -> str:
    anchor = group.anchor
    if has_trait(node, "per_channel"):
        if not anchor.per_channel:
            return f"a per-channel vector after a {anchor.template} (its kernel walks the pool's input, not its channels)"
        rank = node.outputs[0].type.rank
        axis = node.attrs["axis"] % rank
        if anchor.channel_axis is not None and (axis != anchor.channel_axis % rank or node.inputs[0] not in group.made):
            return f"bias along axis {axis} is not the tile's channel axis"
    if anchor.same_type and node.outputs[0].type != group.tile:
        return f"its shape {node.outputs[0].type} is not the {anchor.template} tile's {group.tile}"
    if anchor.chain:
        shapes = set(gate_shapes(group.members) or (group.tile.shape,))
        if node.outputs[0].type.shape not in shapes:
            return f"its shape {node.outputs[0].type} differs from the chain's {group.tile}"
        if has_trait(node, "per_channel") and group.gates:
            return "a bias inside a chain split into gates"
    return ""


def pool_joins(grouping: Grouping, group: Group, node: Node) -> str:
    if "pool" not in group.anchor.ends:
        return "a pool fuses only after a convolution"
    return template_refusal("conv_pool", node) or grouping.single_consumer(node.inputs[0]) or (
        "values of the group are used outside it; a pooled kernel stores only the pooled map"
        if grouping.escapes(group.members, node) else "")


def global_pool_joins(grouping: Grouping, group: Group, node: Node) -> str:
    """A global average pool ends a conv kernel: each program averages its images' whole maps in registers
    (the window is the map), so the map is never stored; a ResNet head's pool needs no kernel of its own."""
    if "global_pool" not in group.anchor.ends:
        return "a global average pool fuses only after a convolution"
    if node.inputs[0].type != group.tile:
        return f"it pools {node.inputs[0].type}, not the conv tile {group.tile}"
    return grouping.single_consumer(node.inputs[0]) or (
        "values of the group are used outside it; a pooled kernel stores only the pooled map"
        if grouping.escapes(group.members, node) else "")


def softmax_joins(grouping: Grouping, group: Group, node: Node) -> str:
    if "softmax" not in group.anchor.ends or group.gates:
        return "a softmax fuses only after a dense layer's matmul"
    if node.attrs.get("axis", -1) % group.tile.rank != group.tile.rank - 1:
        return "softmax is not over the last axis"
    return template_refusal("matmul_softmax", [*group.members, node]) or grouping.single_consumer(node.inputs[0])


def concat_joins(grouping: Grouping, group: Group, node: Node) -> str:
    t = node.outputs[0].type
    if group.anchor.chain:  # a chain joins gate-wide values back into one full-width value, stored gate by gate
        if node.attrs["axis"] % t.rank != t.rank - 1 or len({v.type.shape for v in node.inputs}) != 1:
            return "the concat is not of equal gates along the last axis"
        if any(has_trait(m, "per_channel") for m in group.members):
            return "a bias inside a chain joined into gates"
        if group.gates is not None and (len(node.inputs) != group.gates
                                        or (t.shape, node.inputs[0].type.shape) != gate_shapes(group.members)):
            return f"a concat of {len(node.inputs)} gates {t} does not match the chain's {group.gates} gates"
        if group.gates is None and node.inputs[0].type.shape != group.tile.shape:
            return f"the concat inputs {node.inputs[0].type} are not the chain's {group.tile}"
        return ""
    if not group.anchor.gates or not group.gates or len(node.inputs) != group.gates \
            or t.shape != group.tile.shape or node.attrs["axis"] % t.rank != t.rank - 1:
        return "only a gated matmul tile joins its gates back (a concat of one tile per gate)"
    return ""


def split_joins(grouping: Grouping, group: Group, node: Node) -> str:
    if not group.anchor.gates:
        return "only a matmul tile or an elementwise chain splits into gates"
    sizes, t = node.attrs["sizes"], node.inputs[0].type
    if node.attrs["axis"] % t.rank != t.rank - 1 or len(set(sizes)) != 1:
        return "the split is not into equal gates along the last axis"
    if group.gates is not None and len(sizes) != group.gates:
        return f"{len(sizes)} gates do not match the group's {group.gates}"
    if not group.anchor.chain:
        return f"the split input {t} is not the matmul tile {group.tile}" if t.shape != group.tile.shape else ""
    if any(has_trait(m, "per_channel") for m in group.members):
        return "a bias inside a chain split into gates"
    splits_own = node.inputs[0] in group.made
    full, gate = gate_shapes(group.members) or (t.shape, node.outputs[0].type.shape if splits_own else group.tile.shape)
    if (t.shape, node.outputs[0].type.shape) != (full, gate) or \
            (splits_own and group.gates is None and t.shape != group.tile.shape):
        return f"the split input {t} is not the chain's {group.tile}"
    return ""


def gate_shapes(members: list[Node]) -> tuple[tuple, tuple] | None:
    """(full width, one gate): the shapes an elementwise chain split into gates works on."""
    for node in members:
        if node.op == "split":
            return node.inputs[0].type.shape, node.outputs[0].type.shape
        if node.op == "concat":
            return node.outputs[0].type.shape, node.inputs[0].type.shape
    return None


JOIN_RULES = (
    (lambda n: n.op in ELEMENTWISE, elementwise_joins),
    (lambda n: has_trait(n, "pool"), pool_joins),
    (lambda n: has_trait(n, "global_pool"), global_pool_joins),
    (lambda n: has_trait(n, "softmax"), softmax_joins),
    (lambda n: n.op == "concat", concat_joins),
    (lambda n: n.op == "split", split_joins),
    (lambda n: anchor_of(n.op) is not None or n.op == "scan", lambda grouping, group, n: f"{n.op} starts a kernel of its own"),
)
