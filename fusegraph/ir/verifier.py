"""The verifier: every rule a well-formed graph keeps, each broken rule one GraphError naming the node.

Rules: known ops with the right arity; every value defined exactly once, before its uses (no cycles,
no dangling values); each use agrees with the definition's type and layout; each node's recorded
output types are what its op's shape rule gives; an op's layout traits agree with how its rank-4
operands are stored; graph outputs are defined; scan bodies verify too.
"""

from __future__ import annotations

import networkx as nx

from .errors import GraphError
from .graph import Graph, Node, Value
from .nxview import to_networkx
from .ops import get_op, has_trait


def verify(graph: Graph) -> Graph:
    """Return `graph` unchanged if it is well formed, else raise the first broken rule."""
    defined: dict[str, Value] = {}
    every_definition = {v.name for n in graph.nodes for v in n.outputs}
    for node in graph.nodes:
        _check_op(node)
        for value in node.inputs:
            _check_use(graph, node, value, defined, every_definition)
        _check_types(node)
        _check_layouts(node)
        for value in node.outputs:
            if value.name in defined:
                raise GraphError(f"{node.where}: value %{value.name} is defined twice; rename one of them")
            defined[value.name] = value
    for value in graph.outputs:
        if value.name not in defined:
            raise GraphError(f"graph {graph.name}: output %{value.name} is never defined")
        if not _same(defined[value.name], value):
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
    if not _same(defined[value.name], value):
        raise GraphError(f"{node.where}: uses %{value.name} as {value.type} but it is defined as "
                         f"{defined[value.name].type}")


def _same(defined: Value, used: Value) -> bool:
    """The same value, stored the same way (a type's equality leaves its layout out)."""
    return defined == used and defined.type.layout == used.type.layout


def _check_layouts(node: Node) -> None:
    """How an op addresses rank-4 values (its layout traits) matches how they are stored."""
    if node.op in ("input", "parameter", "fused") or has_trait(node, "layout_free"):
        return
    layouts = {v.type.layout for v in (*node.inputs, *node.outputs) if v.type.rank == 4}
    if has_trait(node, "layout_follows") or has_trait(node, "elementwise"):
        if len(layouts) > 1:
            raise GraphError(f"{node.where}: indexes its operands as one but they are stored "
                             f"{' and '.join(sorted(layouts))}")
    elif layouts - {"contiguous"}:
        raise GraphError(f"{node.where}: reads and writes contiguous tensors only, but an operand is channels_last")


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
