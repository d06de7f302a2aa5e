"""Growing one group from the node it starts at: forward through the nodes that read what it makes
(each asked `joins.refusal`), then, as its Anchor allows, the elementwise producers of a chain's
operands, splits of outside values into its gates, and the prologue applied to its data input."""

from __future__ import annotations

from ...ir import Node
from ...ir.ops import has_trait
from ..templates import CHAIN, anchor_of
from .joins import ELEMENTWISE, refusal
from .state import Group, Grouping


def grow(grouping: Grouping, start: Node, pattern: str) -> Group:
    """`start`'s group: its anchor's template decides what joins (an elementwise start: a chain)."""
    anchor = anchor_of(start.op)
    group = Group(anchor or anchor_of(CHAIN), start if anchor else None, [start], set(start.outputs))
    grow_forward(grouping, group, grouping.order[start], pattern)
    if group.anchor.chain:
        absorb_producers(grouping, group)
    if group.anchor.gates and group.gates:
        group.members += outside_splits(grouping, group)
    if group.anchor.prologue:
        group.members = prologue(grouping, group) + group.members
    group.members = grouping.in_order(group.members)
    return group


def grow_forward(grouping: Grouping, group: Group, position: int, pattern: str | None) -> None:
    """Takes in, in graph order after `position`, each node that reads a value the group makes and may
    join it; refusals are recorded when `pattern` names who asks."""
    for node in grouping.graph.nodes[position + 1:]:
        if node in grouping.taken or node in group.members or node.op in ("input", "parameter"):
            continue
        if not any(v in group.made for v in node.inputs):
            continue
        reason = refusal(grouping, group, node)
        if reason:
            if pattern is not None:
                grouping.refuse(group, node, reason, pattern)
            continue
        if node.op == "split":
            group.gates = len(node.outputs)
        elif node.op == "concat" and group.anchor.chain:
            group.gates = len(node.inputs)
        group.takes(node)


def absorb_producers(grouping: Grouping, group: Group) -> None:
    """Elementwise producers of the chain's operands computed from values the chain does not make
    (a GRU's z gate, made beside its r gate): taken in with what else reads them, they cost no launch
    and no round trip through memory. Kept only if nothing outside the chain then sits between two of
    its nodes."""
    before = (list(group.members), set(group.made), group.gates)
    grown = True
    while grown:
        grown = False
        for member in list(group.members):
            for value in member.inputs:
                producer = grouping.producer.get(value)
                if value in group.made or producer is None or producer in grouping.taken \
                        or producer in group.members or producer.op not in ELEMENTWISE \
                        or any(o in grouping.outputs for o in producer.outputs):
                    continue
                if any(grouping.depends_on(v, group.members) for v in producer.inputs) or \
                        refusal(grouping, group, producer):
                    continue
                group.takes(producer)
                grown = True
        if grown:
            first = min(grouping.order[n] for n in group.members)
            grow_forward(grouping, group, first - 1, None)
    if any(v not in group.made and grouping.depends_on(v, group.members) for n in group.members for v in n.inputs):
        group.members, group.made, group.gates = before


def outside_splits(grouping: Grouping, group: Group) -> list[Node]:
    """Splits of outside values into the group's gates, read only by the group (GRU's input gates):
    taking them in lets the kernel read the gates straight from the unsplit value."""
    unmade = Group(group.anchor, group.host, group.members, set(), group.gates)  # the split reads from outside
    found = []
    for node in grouping.graph.nodes:
        if node.op != "split" or node in group.members or node in grouping.taken:
            continue
        consumers = [u for v in node.outputs for u in grouping.users.get(v, [])]
        if consumers and not any(v in grouping.outputs for v in node.outputs) \
                and all(u in group.members for u in consumers) and not refusal(grouping, unmade, node):
            found.append(node)
    return found


def prologue(grouping: Grouping, group: Group) -> list[Node]:
    """Single-consumer ops feeding the anchor's data input, applied as it is loaded (the anchor's
    prologue trait: unary activations for a conv or matmul; for a pool gradient any elementwise op,
    such as the ReLU's backward, whose second operand is read at the same pooled position)."""
    anchor, chain = group.host, []
    value = anchor.inputs[0]
    while True:
        producer = grouping.producer.get(value)
        if (producer is None or producer in grouping.taken or not has_trait(producer, group.anchor.prologue)
                or has_trait(producer, "per_channel") or value in grouping.outputs
                or len(grouping.users.get(value, [])) != 1
                or any(grouping.depends_on(v, [anchor]) for v in producer.inputs[1:])):
            return chain
        chain.insert(0, producer)
        value = producer.inputs[0]


def why(members: list[Node]) -> str:
    """The reason a grown group gives: its anchor, its prologue and its epilogue."""
    at = next((i for i, n in enumerate(members) if anchor_of(n.op) is not None), None)
    if at is None:
        return f"elementwise chain of {', '.join(n.op for n in members)}"
    parts = [f"{members[at].op} anchor"]
    if at:
        parts.append(f"{', '.join(n.op for n in members[:at])} applied to its input as it is loaded (prologue)")
    if members[at + 1:]:
        parts.append(f"{', '.join(n.op for n in members[at + 1:])} in its epilogue")
    return " with ".join(parts[:2]) + (f" and {parts[2]}" if len(parts) > 2 else "")
