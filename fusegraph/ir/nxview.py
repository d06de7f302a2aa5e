"""A networkx view of a graph, for graph algorithms (cycles, reachability, drawing)."""

from __future__ import annotations

import networkx as nx

from .graph import Graph


def to_networkx(graph: Graph) -> nx.DiGraph:
    """Nodes keyed by their first output's name (attrs: op, layer, node); edges producer → consumer."""
    g = nx.DiGraph()
    producer: dict[str, str] = {}
    for node in graph.nodes:
        g.add_node(node.name, op=node.op, layer=node.layer, node=node)
        for v in node.outputs:
            producer[v.name] = node.name
    for node in graph.nodes:
        for v in node.inputs:
            if v.name in producer:
                g.add_edge(producer[v.name], node.name, value=v.name)
    return g
