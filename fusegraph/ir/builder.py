"""GraphBuilder: append nodes one by one, running each op's shape rule as they go."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import GraphError
from .graph import FORWARD, Graph, Node, Role, Value
from .ops import get_op
from .types import TensorType


class GraphBuilder:
    def __init__(self, name: str = "graph", layer: str | None = None, *, tied: Mapping[str, str] | None = None,
                 frozen: Iterable[str] = ()) -> None:
        """`tied`: parameter name -> the parameter it is (asked for, it gives that one: tied weights);
        `frozen`: parameters kept as they are in training, whatever the layer asking says."""
        self.name = name
        self.layer = layer  # the layer nodes belong to when `op` is not told otherwise
        self.nodes: list[Node] = []
        self.values: dict[str, Value] = {}
        self._params: dict[str, Value] = {}
        self.tied = dict(tied or {})
        self.frozen = set(frozen)
        self.asked: set[str] = set()  # every parameter name a layer asked for (tied ones included)

    def fresh(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, … if taken."""
        name, i = base, 0
        while name in self.values:
            i += 1
            name = f"{base}_{i}"
        return name

    def input(self, name: str, type: TensorType, layer: str | None = None) -> Value:
        return self._argument("input", name, type, layer, {})

    def parameter(self, name: str, type: TensorType, init: str, *, trainable: bool = True,
                  layer: str | None = None, **init_args: Any) -> Value:
        """A weight; asking again for the same name (a layer called twice), or for a name tied to it,
        returns the same value."""
        self.asked.add(name)
        asked, name = name, self.tied.get(name, name)
        if name in self._params:
            if self._params[name].type != type:
                tie = f"{asked}, tied to {name}," if asked != name else name
                raise GraphError(f"parameter {tie} is {self._params[name].type} but is asked for as {type}")
            return self._params[name]
        value = self._argument("parameter", name, type, layer,
                               {"init": init, "trainable": trainable and name not in self.frozen, **init_args})
        self._params[name] = value
        return value

    def _argument(self, op: str, name: str, type: TensorType, layer: str | None, attrs: dict) -> Value:
        if name in self.values:
            raise GraphError(f"the name {name!r} is used twice; give each input and layer a unique name")
        value = Value(name, type)
        node = Node(op, (), (value,), {"type": type, **attrs}, layer)
        get_op(op).infer([], node.attrs)
        self.nodes.append(node)
        self.values[name] = value
        return value

    def op(self, op: str, inputs: Sequence[Value], *, name: str, layer: str | None = None,
           output_names: Sequence[str] | None = None, role: Role = FORWARD, **attrs: Any) -> Value | tuple[Value, ...]:
        """Append `op(inputs, **attrs)`; one output is returned as a Value, several as a tuple
        (named `name.<output_names[i]>`, or `name.<i>`)."""
        opdef = get_op(op)
        layer = layer or self.layer
        if opdef.num_inputs is not None and len(inputs) != opdef.num_inputs:
            raise GraphError(f"{op} takes {opdef.num_inputs} inputs, got {len(inputs)}")
        name = self.fresh(name)
        probe = Node(op, tuple(inputs), (), attrs, layer)
        try:
            types = opdef.infer([v.type for v in inputs], probe.attrs)
        except GraphError as error:
            where = f"layer '{layer}'" if layer else f"node %{name}"
            raise GraphError(f"{where} ({op}): {error}") from None
        if len(types) == 1:
            names = [name]
        else:
            suffixes = output_names or [str(i) for i in range(len(types))]
            if len(suffixes) != len(types):
                raise GraphError(f"{op} has {len(types)} outputs but {len(suffixes)} output names were given")
            names = [self.fresh(f"{name}.{s}") for s in suffixes]
        outputs = tuple(Value(n, t) for n, t in zip(names, types))
        for v in outputs:
            self.values[v.name] = v
        self.nodes.append(Node(op, tuple(inputs), outputs, probe.attrs, layer, role))
        return outputs[0] if len(outputs) == 1 else outputs

    def copy_of(self, node: Node, inputs: Mapping[str, Value]) -> Node:
        """Append `node` again, its inputs renamed by `inputs` (value name -> value) where given; its
        outputs keep their names and become this builder's values (a cell recomputed from stored carries)."""
        for value in node.outputs:
            if value.name in self.values:
                raise GraphError(f"the name {value.name!r} is used twice; a copied node keeps its outputs' names")
        copy = node.replace(inputs=tuple(inputs.get(v.name, v) for v in node.inputs))
        self.nodes.append(copy)
        self.values.update({v.name: v for v in copy.outputs})
        return copy

    def build(self, outputs: Sequence[Value]) -> Graph:
        return Graph(tuple(self.nodes), tuple(outputs), self.name)
