"""Shared graph-editing helpers for passes: substitute values, cut a sub-graph out, re-sort."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from ..ir import Graph, Node, Value


def substitute(node: Node, mapping: Mapping[str, Value]) -> Node:
    """`node` with each input named in `mapping` replaced."""
    if not any(v.name in mapping for v in node.inputs):
        return node
    return node.replace(inputs=tuple(mapping.get(v.name, v) for v in node.inputs))


def with_attrs(node: Node, **attrs) -> Node:
    return node.replace(attrs={**node.attrs, **attrs})


def input_node(value: Value) -> Node:
    return Node("input", (), (value,), {"type": value.type})


def subgraph(members: list[Node], graph: Graph, name: str) -> tuple[Graph, list[Value], list[Value]]:
    """The members as a graph of their own: (body, external inputs in first-use order, escaping outputs).

    A member's value escapes when a non-member or the graph's outputs use it."""
    produced = {v.name for n in members for v in n.outputs}
    member_ids = {id(n) for n in members}
    inputs: dict[str, Value] = {}
    for n in members:
        for v in n.inputs:
            if v.name not in produced:
                inputs.setdefault(v.name, v)
    used_outside = {v.name for n in graph.nodes if id(n) not in member_ids for v in n.inputs}
    used_outside |= {v.name for v in graph.outputs}
    outputs = [v for n in members for v in n.outputs if v.name in used_outside]
    body = Graph((*(input_node(v) for v in inputs.values()), *members), tuple(outputs), name)
    return body, list(inputs.values()), outputs


def stable_toposort(nodes: Iterable[Node]) -> list[Node]:
    """Topological order that keeps the given order wherever dependencies allow."""
    nodes = list(nodes)
    producer = {v.name: i for i, n in enumerate(nodes) for v in n.outputs}
    deps = [{producer[v.name] for v in n.inputs if v.name in producer} for n in nodes]
    waiting = [len(d) for d in deps]
    users: list[list[int]] = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise RuntimeError("a rewrite produced a cycle")  # a pass bug, not a user error
    return order


def fresh_name(taken: set[str], base: str) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def value_names(graph: Graph) -> set[str]:
    return {v.name for n in graph.nodes for v in n.outputs}


