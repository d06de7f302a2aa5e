"""What fusion's patterns share while they group one graph: the graph's use-def facts, the groups
found so far (each a `Group`: its template's Anchor, members and the values it makes), the nodes they
took, and a Decision for every fusion made or refused."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ...ir import Graph, Node, Value
from ..kernel_names import group_name
from ..templates import Anchor


@dataclass(frozen=True)
class Decision:
    """One fusion decision: `nodes` joined kernel `kernel`, or `node` stayed out of it, and why."""

    kernel: str
    nodes: tuple[str, ...]
    fused: bool
    reason: str
    scope: str = ""  # the scan whose body this is about, if any
    pattern: str = ""  # the fusion pattern that made or refused it


@dataclass
class Group:
    """A kernel being formed: the template's Anchor, the node it is built around (`host`; None for an
    elementwise chain), its members, the values they make, and its gate count once it splits."""

    anchor: Anchor
    host: Node | None
    members: list[Node]
    made: set[Value] = field(default_factory=set)
    gates: int | None = None

    @property
    def tile(self):
        """The type of the first member's output: the tile every epilogue op is measured against."""
        return self.members[0].outputs[0].type

    def takes(self, node: Node) -> None:
        self.members.append(node)
        self.made.update(node.outputs)


class Grouping:
    """One graph's grouping state (patterns read and extend it; see passes/fusion/patterns.py)."""

    def __init__(self, graph: Graph, scope: str) -> None:
        self.graph = graph
        self.scope = scope
        self.order = {node: i for i, node in enumerate(graph.nodes)}
        self.producer: dict[Value, Node] = {v: n for n in graph.nodes for v in n.outputs}
        self.users: dict[Value, list[Node]] = defaultdict(list)
        for node in graph.nodes:
            for value in node.inputs:
                self.users[value].append(node)
        self.outputs = set(graph.outputs)
        self.taken: set[Node] = set()
        self.found: list[tuple[Group, str]] = []  # (group, the pattern that made it)
        self.decisions: list[Decision] = []
        self._ancestors: dict[Node, frozenset[Node]] = {}

    def in_order(self, nodes) -> list[Node]:
        return sorted(nodes, key=self.order.__getitem__)

    def record(self, group: Group, reason: str, pattern: str) -> None:
        group.members = self.in_order(group.members)
        self.found.append((group, pattern))
        self.taken.update(group.members)
        self.decisions.append(Decision(group_name(group.members), tuple(n.name for n in group.members), True, reason,
                                       self.scope, pattern))

    def refuse(self, group: Group, node: Node, reason: str, pattern: str) -> None:
        self.decisions.append(Decision(group_name(group.members), (node.name,), False, reason, self.scope, pattern))

    def drop(self, group: Group) -> None:
        """Forget a group found earlier (a later pattern merges it into another)."""
        self.found = [(g, p) for g, p in self.found if g is not group]
        self.taken.difference_update(group.members)

    def group_holding(self, node: Node) -> Group | None:
        return next((g for g, _ in self.found if node in g.members), None)

    def ancestors(self, node: Node) -> frozenset[Node]:
        """Every node `node` is computed from (found once for the whole graph, in graph order)."""
        if not self._ancestors:
            for n in self.graph.nodes:
                parents = [self.producer[v] for v in n.inputs if v in self.producer]
                self._ancestors[n] = frozenset().union(*(self._ancestors[p] | {p} for p in parents))
        return self._ancestors[node]

    def depends_on(self, value: Value, members: list[Node]) -> bool:
        """Whether `value` is computed from any of `members`."""
        producer = self.producer.get(value)
        if producer is None or producer.op in ("input", "parameter"):
            return False
        reached = self.ancestors(producer) | {producer}
        return any(m in reached for m in members)

    def single_consumer(self, value: Value) -> str:
        """Why `value` must be stored (other consumers, or a graph output), or ""."""
        consumers = self.users.get(value, [])
        if value in self.outputs or len(consumers) != 1:
            names = ", ".join(f"%{n.name}" for n in consumers) + (" and the graph output" if value in self.outputs else "")
            return f"%{value.name} has other consumers ({names}); it must be stored"
        return ""

    def escapes(self, members: list[Node], joining: Node) -> bool:
        """Whether a member's value is needed outside the group once `joining` is in it."""
        inside = {*members, joining}
        return any(v in self.outputs or any(u not in inside for u in self.users.get(v, []))
                   for n in members for v in n.outputs)
