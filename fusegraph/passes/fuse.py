"""Fusion: group nodes into `fused` nodes, one kernel each, by the patterns of passes/fusion/patterns.py,
run in order over one grouping state; recurse into scan bodies. The patterns: a bias gradient beside
its weight gradient (bias_gradient_sibling); an anchor (conv, matmul, pool gradient) with the
activation prologue before it and the elementwise / pool / global pool / softmax epilogue after it
(anchor_epilogue); chains of elementwise ops (pointwise_chain); an elementwise chain whose value is a
matmul's data operand, computed in the matmul's K loop (computed_prologue: an RNN's backward step, dz
then dz W_hh). Whether a node may join a group is one rule per kind of node (passes/fusion/joins.py),
asking the Anchor record the group's template registered (passes/templates.py), as is a limit of the
template itself (a softmax row in one block).

Assumes: a verified graph (scan projections already hoisted, for RNN cells to fuse fully).
Guarantees: a verified graph computing the same values; each `fused` node's body is the group's
original nodes; a Decision for every fusion made or refused, with its reason. Legality:
  - every node taken in reads a value the group makes (or, for an elementwise chain, is an
    elementwise producer of its operands); no input from outside depends on the group;
  - a value the group makes that is used outside it (or is a graph output) is stored: it escapes;
  - a pool or softmax is taken only when its input has no other consumer, and ends a conv group;
  - the tile the template computes covers the op: bias on the channel axis, elementwise operands of
    the output's shape, splits into equal gates along the last axis and concats of one tile per
    gate (a matmul's gate tiles, or an elementwise chain over one gate's elements), softmax rows
    that fit one block; a computed prologue's epilogue reads chain values only where the output's
    columns are the gate's."""

from __future__ import annotations

from ..ir import Graph, Node, verify
from .fusion import PATTERNS, Decision, Grouping
from .kernel_names import group_name
from .rewrite import stable_toposort, subgraph, with_attrs
from .templates import CHAIN

__all__ = ["Decision", "fuse", "fuse_with_report"]


def fuse(graph: Graph) -> Graph:
    return fuse_with_report(graph)[0]


def fuse_with_report(graph: Graph, scope: str = "") -> tuple[Graph, list[Decision]]:
    decisions: list[Decision] = []
    nodes = []
    for node in graph.nodes:
        if node.op == "scan":
            body, inner = fuse_with_report(node.attrs["body"], scope=node.outputs[0].name)
            decisions += inner
            node = with_attrs(node, body=body)
        nodes.append(node)
    graph = Graph(tuple(nodes), graph.outputs, graph.name)
    grouping = Grouping(graph, scope)
    for pattern in PATTERNS:
        pattern(grouping)
    decisions += grouping.decisions
    if not grouping.found:
        return graph, decisions
    replaced: dict[Node, Node] = {}
    dropped: set[Node] = set()
    for group, pattern in grouping.found:
        members = group.members
        kernel = group_name(members)
        body, inputs, outputs = subgraph(members, graph, kernel)
        anchor = group.host.op if group.host is not None else CHAIN  # the template the kernel is made by
        attrs = {"body": body, "anchor": anchor, "kernel": kernel, "pattern": pattern}
        replaced[members[-1]] = Node("fused", tuple(inputs), tuple(outputs), attrs, members[0].layer, members[-1].role)
        dropped.update(members[:-1])
    rewritten = [replaced.get(n, n) for n in graph.nodes if n not in dropped]
    return verify(Graph(tuple(stable_toposort(rewritten)), graph.outputs, graph.name)), decisions
