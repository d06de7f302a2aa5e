"""The verifier: every rule a well-formed graph keeps, each broken rule one GraphError naming the node.

Rules: known ops with the right arity; every value defined exactly once, before its uses (no cycles,
no dangling values); each use agrees with the definition's type; each node's recorded output types
are what its op's shape rule gives; graph outputs are defined; scan bodies verify too.
"""

from __future__ import annotations

import networkx as nx

from .errors import GraphError
from .graph import Graph, Node, Value
from .nxview import to_networkx
from .ops import get_op


def verify(graph: Graph) -> Graph:
    """Return `graph` unchanged if it is well formed, else raise the first broken rule."""
    defined: dict[str, Value] = {}
    every_definition = {v.name for n in graph.nodes for v in n.outputs}
    for node in graph.nodes:
        _check_op(node)
        for value in node.inputs:
            _check_use(graph, node, value, defined, every_definition)
        _check_types(node)
        for value in node.outputs:
            if value.name in defined:
                raise GraphError(f"{node.where}: value %{value.name} is defined twice; rename one of them")
            defined[value.name] = value
    for value in graph.outputs:
        if value.name not in defined:
            raise GraphError(f"graph {graph.name}: output %{value.name} is never defined")
        if defined[value.name] != value:
            raise GraphError(f"graph {graph.name}: output %{value.name} is {value.type} but defined as "
                             f"{defined[value.name].type}")
    return graph


def _check_op(node: Node) -> None:
    try:
        opdef = get_op(node.op)
    except GraphError as error:
        raise GraphError(f"{node.where}: {error}") from None
    if opdef.num_inputs is not None and len(node.inputs) != opdef.num_inputs:
        raise GraphError(f"{node.where}: {node.op} takes {opdef.num_inputs} inputs, got {len(node.inputs)}")
    if not node.outputs:
        raise GraphError(f"{node.where}: a node must define at least one value")


def _check_use(graph: Graph, node: Node, value: Value, defined: dict[str, Value], every: set[str]) -> None:
    if value.name not in defined:
        if value.name not in every:
            raise GraphError(
                f"{node.where}: uses %{value.name}, which no node defines (a dangling value); "
                "add its input, parameter or producing node to the graph"
            )
        cycle = _find_cycle(graph)
        if cycle:
            raise GraphError(f"{node.where}: the graph has a cycle {' -> '.join('%' + n for n in cycle)}; "
                             "a value cannot depend on itself (RNNs loop with a scan node)")
        raise GraphError(f"{node.where}: uses %{value.name} before the node defining it; list nodes in "
                         "topological order")
    if defined[value.name] != value:
        raise GraphError(f"{node.where}: uses %{value.name} as {value.type} but it is defined as "
                         f"{defined[value.name].type}")


def _check_types(node: Node) -> None:
    if node.op in ("scan", "fused"):
        try:
            verify(node.attrs["body"])
        except GraphError as error:
            raise GraphError(f"{node.where}: in its body: {error}") from None
    try:
        expected = get_op(node.op).infer([v.type for v in node.inputs], node.attrs)
    except GraphError as error:
        raise GraphError(f"{node.where}: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise GraphError(f"{node.where}: malformed attrs {dict(node.attrs)}: {error!r}") from None
    recorded = [v.type for v in node.outputs]
    if recorded != list(expected):
        raise GraphError(f"{node.where}: records output types {[str(t) for t in recorded]} but its shape rule "
                         f"gives {[str(t) for t in expected]}")


def _find_cycle(graph: Graph) -> list[str]:
    try:
        edges = nx.find_cycle(to_networkx(graph))
    except nx.NetworkXNoCycle:
        return []
    return [u for u, _ in edges] + [edges[0][0]]
