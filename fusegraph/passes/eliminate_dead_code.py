"""Dead-code elimination.

Assumes: a verified graph. Guarantees: the same graph without compute nodes none of whose outputs
reaches a graph output (e.g. a classifier's softmax in a training graph that learns from the
logits); inputs and parameters stay, so the graph's signature does not change."""

from __future__ import annotations

from ..ir import Graph, verify


def eliminate_dead_code(graph: Graph) -> Graph:
    live = {v.name for v in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if node.op in ("input", "parameter") or any(v.name in live for v in node.outputs):
            if node.op == "scan":  # its body keeps what its outputs need; the body's signature stays
                body = eliminate_dead_code(node.attrs["body"])
                node = node.replace(attrs={**node.attrs, "body": body})
            kept.append(node)
            live |= {v.name for v in node.inputs}
    return verify(Graph(tuple(reversed(kept)), graph.outputs, graph.name))
