"""Fusion patterns: each a function over the grouping state that finds the groups it matches (taking
their nodes) and records a Decision for each group made and each node refused. They run in PATTERNS'
order: anchors grow before elementwise chains, so an activation feeding a conv or matmul becomes its
prologue rather than a chain of its own (an earlier anchor's epilogue still takes it first: no
recomputation); a chain becomes a matmul's computed prologue only once both exist."""

from __future__ import annotations

from ...ir.ops import has_trait
from ..templates import anchor_of
from .grow import grow, why
from .joins import ELEMENTWISE, gate_shapes
from .state import Group, Grouping


def bias_gradient_sibling(grouping: Grouping) -> None:
    """A bias gradient sums the output gradient its weight gradient reads row by row: computed in the
    weight-gradient kernel, one read of the output gradient and one launch fewer.

        %dw = matmul_tn(%dy, %x)   %db = bias_grad(%dy, axis=-1)   ->   fused matmul_tn_bias_grad"""
    for node in grouping.graph.nodes:
        if node.op != "bias_grad":
            continue
        dy, rank = node.inputs[0], node.inputs[0].type.rank
        for user in grouping.users.get(dy, []):
            sibling = anchor_of(user.op)
            if user in grouping.taken or sibling is None or sibling.bias_gradient is None:
                continue
            at, axis = sibling.bias_gradient
            if user.inputs[at] == dy and node.attrs["axis"] % rank == axis % rank:
                grouping.record(Group(sibling, user, [user, node]), f"bias gradient reduced inside the {user.op} kernel",
                                "bias_gradient_sibling")
                break


def anchor_epilogue(grouping: Grouping) -> None:
    """An anchor (conv, matmul, pool gradient) with the activation its input goes through as it is
    loaded, and the elementwise ops, pool, global pool or softmax after it.

        %h = relu(%x)  %y = conv2d(%h, %w)  %z = bias_add(%y, %b)  %p = max_pool2d(relu(%z))
        ->  fused relu_conv2d_bias_add_relu_max_pool2d"""
    _grow_each(grouping, [n for n in grouping.graph.nodes
                          if (anchor := anchor_of(n.op)) is not None and anchor.epilogue], "anchor_epilogue")


def pointwise_chain(grouping: Grouping) -> None:
    """Elementwise ops reading one another (split into gates and joined back: an LSTM cell's gates).

        %i, %f, %g, %o = split(%z)  %c = add(mul(sigmoid(%f), %c0), mul(sigmoid(%i), tanh(%g)))  ->  one kernel"""
    _grow_each(grouping, [n for n in grouping.graph.nodes if n.op in ELEMENTWISE], "pointwise_chain")


def computed_prologue(grouping: Grouping) -> None:
    """An elementwise chain (possibly split into gates and joined back) whose value is the data operand
    of a matmul (an RNN's backward step: the cell gradient dz, then dz W_hh): the matmul kernel computes
    its operand chunk by chunk, every gate at once, storing what else the chain makes that is used elsewhere.

        %dz = concat(mul(%dh, ...), ...)  %dh0 = matmul(%dz, %w_hh)  ->  fused ..._matmul"""
    for chain in [g for g, _ in grouping.found if g.host is None]:
        matmul = next((u for n in reversed(chain.members) for v in n.outputs for u in grouping.users.get(v, [])
                       if (a := anchor_of(u.op)) is not None and a.computed_operand and u.inputs[0] == v
                       and u.inputs[1] not in chain.made), None)
        if matmul is None or grouping.depends_on(matmul.inputs[1], chain.members) or \
                any(has_trait(n, "per_channel") for n in chain.members):
            continue  # NOTE: the gated template computes the operand from full-size values only
        joined = matmul.inputs[0]
        if any(has_trait(n, "gates") for n in chain.members) and grouping.producer[joined].op != "concat":
            continue  # the operand must be the full width the gates join into
        host = grouping.group_holding(matmul) or Group(anchor_of(matmul.op), matmul, [matmul])
        gate = (gate_shapes(chain.members) or (None, joined.type.shape))[1]
        read_by_epilogue = [v for n in host.members[1:] for v in n.inputs if v in chain.made]
        if host.members[0] is not matmul or any(n.op == "split" for n in host.members) or (read_by_epilogue and (
                matmul.outputs[0].type.shape != gate or any(v.type.shape != gate for v in read_by_epilogue))):
            # a prologue of its own, gates in the epilogue, or an epilogue reading the chain's values where
            # the output's columns are not the chain's (they are when dh and the gates share a width)
            continue
        grouping.drop(chain)
        grouping.drop(host)
        merged = Group(host.anchor, matmul, [*chain.members, *host.members], chain.made | host.made)
        grouping.record(merged, f"the elementwise chain computes the matmul's operand %{joined.name} chunk by chunk "
                                "inside its K loop", "computed_prologue")


def _grow_each(grouping: Grouping, starts, pattern: str) -> None:
    """Each start not yet taken, grown into its group; groups of more than one node are kept."""
    for node in starts:
        if node not in grouping.taken:
            group = grow(grouping, node, pattern)
            if len(group.members) > 1:
                grouping.record(group, why(group.members), pattern)


PATTERNS = (bias_gradient_sibling, anchor_epilogue, pointwise_chain, computed_prologue)
