"""The IR: values, nodes and graphs. Small frozen objects; edits make new ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .types import TensorType


@dataclass(frozen=True)
class Value:
    """An SSA value: defined by exactly one node, named uniquely within its graph."""

    name: str
    type: TensorType

    def __str__(self) -> str:
        return f"%{self.name}"


def freeze_attrs(attrs: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(attrs or {}))


@dataclass(frozen=True)
class Role:
    """What a node is for, as a typed fact (like torch.fx's node.meta), never read off its name:
    part of the forward pass, or of the backward pass autodiff emitted (and for which node)."""

    backward: bool = False
    gradient_of: str | None = None  # the forward node whose VJP emitted it


FORWARD = Role()


@dataclass(frozen=True, eq=False)
class Node:
    """One operation: `outputs = op(inputs, **attrs)`. `layer` names the DSL layer it came from."""

    op: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    layer: str | None = None
    role: Role = FORWARD

    def replace(self, **changes: Any) -> Node:
        """This node with some fields changed (inputs, outputs, attrs, ...); its role and layer carried over."""
        return replace(self, **changes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", freeze_attrs(self.attrs))

    @property
    def name(self) -> str:
        return self.outputs[0].name if self.outputs else f"<{self.op}>"

    @property
    def where(self) -> str:
        """How error messages name this node: the layer it came from, then the node."""
        if self.layer and self.layer != self.name:
            return f"layer '{self.layer}' (node %{self.name} = {self.op})"
        if self.layer:
            return f"layer '{self.layer}' ({self.op})"
        return f"node %{self.name} ({self.op})"


@dataclass(frozen=True, eq=False)
class Graph:
    """Nodes in topological order; `input` and `parameter` nodes define the graph's arguments."""

    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]
    name: str = "graph"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    @property
    def input_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op == "input")

    @property
    def param_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op == "parameter")

    @property
    def inputs(self) -> tuple[Value, ...]:
        return tuple(n.outputs[0] for n in self.input_nodes)

    @property
    def params(self) -> tuple[Value, ...]:
        return tuple(n.outputs[0] for n in self.param_nodes)

    @property
    def compute_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op not in ("input", "parameter"))

    def producers(self) -> dict[str, Node]:
        return {v.name: n for n in self.nodes for v in n.outputs}

    def users(self) -> dict[str, list[Node]]:
        used: dict[str, list[Node]] = {v.name: [] for n in self.nodes for v in n.outputs}
        for n in self.nodes:
            for v in n.inputs:
                used.setdefault(v.name, []).append(n)
        return used

    def digest(self) -> str:
        """SHA-256 of the printed graph: equal for graphs that print alike (what a save checks its model by)."""
        import hashlib

        return hashlib.sha256(str(self).encode()).hexdigest()

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)
